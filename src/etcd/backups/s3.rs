//! CSM's bucket `etcd-backup`, reached with the keys of the Secret
//! `etcd-backup-s3-credentials`: the client, downloads and uploads, and errors told without
//! the keys.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use futures::TryStreamExt as _;
use object_store::{ObjectStore, ObjectStoreExt as _, aws::AmazonS3Builder, path::Path as S3Path};
use tokio::io::AsyncWriteExt as _;

use super::{BackupCopy, BackupError, Backups};

/// The region the S3 client signs for: CSM's own tools use this one against its Ceph RGW
/// (`create_aws_creds.sh` writes `region=foo`), which does not check it.
const S3_REGION: &str = "foo";

/// The three keys of CSM's Secret `etcd-backup-s3-credentials`, read from their files.
struct S3Credentials {
    access_key: String,
    secret_key: String,
    endpoint: String,
}

impl S3Credentials {
    fn read(dir: &Path) -> Result<S3Credentials, BackupError> {
        let read = |key: &str| {
            let path = dir.join(key);
            let text = std::fs::read_to_string(&path).map_err(|e| BackupError::Credentials {
                dir: dir.to_owned(),
                detail: format!("cannot read {key}: {e}"),
            })?;
            let value = text.trim().to_owned();
            if value.is_empty() {
                return Err(BackupError::Credentials {
                    dir: dir.to_owned(),
                    detail: format!("{key} is empty"),
                });
            }
            Ok(value)
        };
        Ok(S3Credentials {
            access_key: read("access_key")?,
            secret_key: read("secret_key")?,
            endpoint: read("http_s3_endpoint")?,
        })
    }
}

/// A client of the bucket, and the endpoint for messages.
pub(super) struct Bucket {
    pub(super) store: Arc<dyn ObjectStore>,
    endpoint: String,
    name: String,
    /// The access and secret key, taken out of every message: S3 servers quote the access key
    /// in their error responses (AWS and MinIO: `<AWSAccessKeyId>`), which object_store puts in
    /// its errors.
    keys: [String; 2],
}

impl Bucket {
    /// The object `copy` (`s3://<bucket>/<key>`) as it downloads.
    pub(super) async fn download(
        &self,
        copy: &BackupCopy,
    ) -> Result<futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>, BackupError>
    {
        let key = copy
            .location
            .strip_prefix(&format!("s3://{}/", self.name))
            .unwrap_or(&copy.location);
        let download = self
            .store
            .get(&S3Path::from(key))
            .await
            .map_err(|e| self.error(format!("downloading {}", copy.location), e))?;
        Ok(download.into_stream())
    }

    pub(super) fn error(&self, what: String, err: object_store::Error) -> BackupError {
        let detail = self.redact(crate::errors::error_chain(&err));
        // `head`/`get` say so in the error's kind; a list's refusal is only in its message
        // (object_store keeps the status of its `Generic` errors private).
        let denied = matches!(
            err,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        ) || [
            "403 Forbidden",
            "401 Unauthorized",
            "SignatureDoesNotMatch",
            "InvalidAccessKeyId",
            "AccessDenied",
        ]
        .iter()
        .any(|sign| detail.contains(sign));
        if denied {
            BackupError::S3Denied {
                endpoint: self.endpoint.clone(),
                what,
                detail,
            }
        } else {
            BackupError::S3 {
                endpoint: self.endpoint.clone(),
                what,
                detail,
            }
        }
    }

    pub(super) fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.name)
    }

    /// `text` without the keys.
    fn redact(&self, mut text: String) -> String {
        for key in &self.keys {
            if !key.is_empty() {
                text = text.replace(key.as_str(), "<redacted>");
            }
        }
        text
    }
}

impl Backups {
    /// The bucket, when S3 is configured; the credentials are read at every call, so that a
    /// rotated Secret is used without a restart.
    pub(super) fn bucket(&self) -> Result<Option<Bucket>, BackupError> {
        let Some(dir) = self.config.s3_credentials_dir() else {
            return Ok(None);
        };
        let credentials = S3Credentials::read(dir)?;
        let endpoint = credentials.endpoint.trim_end_matches('/').to_owned();
        let retry = object_store::RetryConfig {
            max_retries: 3,
            retry_timeout: self.config.timeout.min(Duration::from_secs(60)),
            ..object_store::RetryConfig::default()
        };
        let options = object_store::ClientOptions::new()
            .with_timeout(self.config.timeout)
            .with_connect_timeout(Duration::from_secs(10))
            .with_allow_http(endpoint.starts_with("http://"));
        let keys = [credentials.access_key, credentials.secret_key];
        let store = AmazonS3Builder::new()
            .with_endpoint(&endpoint)
            .with_bucket_name(&self.config.s3_bucket)
            .with_region(S3_REGION)
            .with_access_key_id(&keys[0])
            .with_secret_access_key(&keys[1])
            .with_virtual_hosted_style_request(false)
            .with_allow_http(endpoint.starts_with("http://"))
            .with_client_options(options)
            .with_retry(retry)
            .build()
            .map_err(|e| BackupError::Credentials {
                dir: dir.to_owned(),
                detail: format!("http_s3_endpoint {endpoint:?}: {e}"),
            })?;
        Ok(Some(Bucket {
            store: Arc::new(store),
            endpoint,
            name: self.config.s3_bucket.clone(),
            keys,
        }))
    }
}

/// `err` about the S3 copy `copy` rather than the temporary file it was downloaded to.
pub(super) fn in_s3(err: BackupError, copy: &BackupCopy) -> BackupError {
    match err {
        BackupError::Corrupt { detail, .. } => BackupError::Corrupt {
            path: PathBuf::from(&copy.location),
            detail,
        },
        other => other,
    }
}

/// Downloads `copy` from `bucket` into the file `target` (created), synced.
pub(super) async fn download(
    bucket: &Bucket,
    copy: &BackupCopy,
    target: &Path,
) -> Result<(), BackupError> {
    let mut stream = bucket.download(copy).await?;
    let mut file = tokio::fs::File::create(target)
        .await
        .map_err(BackupError::io("creating", target))?;
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(|e| bucket.error(format!("downloading {}", copy.location), e))?
    {
        file.write_all(&chunk)
            .await
            .map_err(BackupError::io("writing", target))?;
    }
    file.sync_all()
        .await
        .map_err(BackupError::io("writing", target))
}

pub(super) enum UploadError {
    Read(std::io::Error),
    S3(object_store::Error),
}

/// Streams the file at `source` to `key` (a multipart upload when it is large).
pub(super) async fn upload(bucket: &Bucket, source: &Path, key: &str) -> Result<(), UploadError> {
    let mut file = tokio::fs::File::open(source)
        .await
        .map_err(UploadError::Read)?;
    let mut writer =
        object_store::buffered::BufWriter::new(bucket.store.clone(), S3Path::from(key));
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = tokio::io::AsyncReadExt::read(&mut file, &mut buffer)
            .await
            .map_err(UploadError::Read)?;
        if n == 0 {
            break;
        }
        writer
            .put(bytes::Bytes::copy_from_slice(&buffer[..n]))
            .await
            .map_err(UploadError::S3)?;
    }
    tokio::io::AsyncWriteExt::shutdown(&mut writer)
        .await
        .map_err(|e| {
            // The upload's own error, when it is one.
            let kind = e.kind();
            match e
                .into_inner()
                .map(|inner| inner.downcast::<object_store::Error>())
            {
                Some(Ok(err)) => UploadError::S3(*err),
                Some(Err(other)) => UploadError::Read(std::io::Error::new(kind, other)),
                None => UploadError::Read(std::io::Error::from(kind)),
            }
        })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fake_s3, with_s3};
    use super::super::*;

    #[tokio::test]
    async fn an_s3_error_that_quotes_the_access_key_is_told_without_it() {
        // What AWS and MinIO answer a request signed with a wrong secret key.
        let endpoint = fake_s3(
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nConnection: close\r\n\
              Content-Length: 186\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\
              <Code>SignatureDoesNotMatch</Code><AWSAccessKeyId>AKIAQUOTEDACCESSKEY9</AWSAccessKeyId>\
              <RequestId>1</RequestId><HostId>h</HostId></Error>   ",
        )
        .await;
        let root = tempfile::tempdir().unwrap();
        let creds = tempfile::tempdir().unwrap();
        let config = with_s3(root.path(), creds.path(), &endpoint, "AKIAQUOTEDACCESSKEY9");
        let err = Backups::new(&config)
            .list("cray-bss", "cray-bss-bitnami-etcd")
            .await
            .unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(matches!(err, BackupError::S3Denied { .. }), "{text}");
        assert!(text.contains("SignatureDoesNotMatch"), "{text}");
        assert!(
            !text.contains("AKIAQUOTEDACCESSKEY9") && !text.contains("the-secret-key"),
            "{text}"
        );
    }
}
