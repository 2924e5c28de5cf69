//! The store's own tests: opening a database where the service is told to.

use super::*;

#[tokio::test]
async fn open_creates_the_directory_of_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("var/lib/etcd-repopulator/runs.db");
    let store = Store::open(path.to_str().unwrap()).await.unwrap();
    store.ping().await.unwrap();
    assert!(path.is_file());

    let url_path = dir.path().join("other/runs.db");
    Store::open(&format!("sqlite://{}", url_path.display()))
        .await
        .unwrap();
    assert!(url_path.is_file());
}

#[tokio::test]
async fn open_names_the_directory_it_cannot_create_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let Err(err) = Store::open(file.join("sub/runs.db").to_str().unwrap()).await else {
        panic!("a directory under a file was created");
    };
    assert!(matches!(err, StoreError::Directory { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "cannot create the directory {} of the database: Not a directory (os error 20)",
            file.join("sub").display()
        )
    );
}

#[tokio::test]
async fn an_in_memory_database_needs_no_directory() {
    Store::open("sqlite::memory:")
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();
}
