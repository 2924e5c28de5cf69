//! Authentication and RBAC authorization as the real API server does them for a service
//! account bound to a namespaced Role: the request's attributes are worked out from its path
//! and method (`apiserver/pkg/endpoints/request/requestinfo.go`), then matched against the
//! Role's rules (`pkg/apis/rbac/v1/evaluation_helpers.go`). A request without a bearer token
//! is the cluster admin (the tests' and the seeding's own client); a request with an unknown
//! token is 401; a service account's request outside its Role is 403 with the real message.
//!
//! `serve --simulate` and the tests run the service as such an account, with the Role of the
//! chart (`cluster::rbac`), so a Kubernetes call the Role does not allow fails there as it
//! would in a cluster.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use axum::{
    extract::{Query, Request, State},
    http::{Method, Uri, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use k8s_openapi::api::rbac::v1::PolicyRule;

use super::error::ApiError;

/// The attributes authorization decides on (`authorizer.Attributes` of a resource request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestAttributes {
    pub verb: String,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

impl RequestAttributes {
    /// The attributes of a resource request; `None` for a non-resource one (`/version`,
    /// `/api`, `/apis`, discovery of a group version), which every authenticated user may make
    /// (the `system:discovery` ClusterRole).
    pub fn of(method: &Method, uri: &Uri) -> Option<RequestAttributes> {
        let parts: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
        let (api_group, mut rest) = match parts.as_slice() {
            ["api", _version, rest @ ..] => (String::new(), rest.to_vec()),
            ["apis", group, _version, rest @ ..] => (group.to_string(), rest.to_vec()),
            _ => return None,
        };
        let params: HashMap<String, String> = Query::try_from_uri(uri)
            .map(|Query(params)| params)
            .unwrap_or_default();
        let mut watch = matches!(params.get("watch").map(String::as_str), Some("true" | "1"));
        if rest.first() == Some(&"watch") {
            watch = true;
            rest.remove(0);
        }
        let mut namespace = String::new();
        if rest.first() == Some(&"namespaces") && rest.len() > 1 {
            namespace = rest[1].to_owned();
            // `namespaces/{ns}/status|finalize` are subresources of the namespace itself.
            if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
                rest.drain(..2);
            }
        }
        let resource = rest.first()?.to_string();
        let mut name = rest.get(1).map(|s| s.to_string()).unwrap_or_default();
        let subresource = rest.get(2).map(|s| s.to_string()).unwrap_or_default();
        let verb = match (method.as_str(), name.is_empty()) {
            ("POST", _) => "create",
            ("GET" | "HEAD", false) if watch => "watch",
            ("GET" | "HEAD", false) => "get",
            ("GET" | "HEAD", true) if watch => "watch",
            ("GET" | "HEAD", true) => "list",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", false) => "delete",
            ("DELETE", true) => "deletecollection",
            (other, _) => return Some(Self::unknown(other, api_group, resource, namespace)),
        }
        .to_owned();
        // A list or watch of one object by `metadata.name` is authorized for that name (so a
        // Role with resourceNames can allow it).
        if name.is_empty()
            && (verb == "list" || verb == "watch")
            && let Some(selector) = params.get("fieldSelector")
        {
            for term in selector.split(',') {
                if let Some(value) = term.strip_prefix("metadata.name=") {
                    name = value.to_owned();
                }
            }
        }
        Some(RequestAttributes {
            verb,
            api_group,
            resource,
            subresource,
            namespace,
            name,
        })
    }

    fn unknown(method: &str, api_group: String, resource: String, namespace: String) -> Self {
        RequestAttributes {
            verb: method.to_lowercase(),
            api_group,
            resource,
            subresource: String::new(),
            namespace,
            name: String::new(),
        }
    }

    /// `resource` or `resource/subresource`, as Role rules name them.
    fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// The real server's `forbiddenMessage` (apiserver/pkg/endpoints/handlers/responsewriters).
    fn forbidden_message(&self, user: &str) -> String {
        let resource = self.combined_resource();
        if self.namespace.is_empty() {
            format!(
                "User {user:?} cannot {} resource {resource:?} in API group {:?} at the cluster scope",
                self.verb, self.api_group
            )
        } else {
            format!(
                "User {user:?} cannot {} resource {resource:?} in API group {:?} in the namespace {:?}",
                self.verb, self.api_group, self.namespace
            )
        }
    }
}

fn has(list: &Option<Vec<String>>, wanted: &str) -> bool {
    list.as_ref()
        .is_some_and(|items| items.iter().any(|item| item == "*" || item == wanted))
}

/// `RuleAllows`: the verb, the API group, the resource (`*`, the exact `resource/subresource`,
/// or `*/subresource`) and, when the rule lists any, the resource name must all match.
pub fn rule_allows(rule: &PolicyRule, request: &RequestAttributes) -> bool {
    let verb = rule.verbs.iter().any(|v| v == "*" || *v == request.verb);
    let group = has(&rule.api_groups, &request.api_group);
    let combined = request.combined_resource();
    let resource = rule.resources.as_ref().is_some_and(|resources| {
        resources.iter().any(|r| {
            r == "*"
                || *r == combined
                || (!request.subresource.is_empty() && *r == format!("*/{}", request.subresource))
        })
    });
    let name = match &rule.resource_names {
        None => true,
        Some(names) if names.is_empty() => true,
        Some(names) => names.contains(&request.name),
    };
    verb && group && resource && name
}

/// A service account and what its RoleBinding grants: `rules` in `namespace` only.
#[derive(Clone, Debug)]
struct Grant {
    user: String,
    namespace: String,
    rules: Vec<PolicyRule>,
}

/// One request a service account made, and whether it was allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRecord {
    pub user: String,
    pub request: RequestAttributes,
    pub allowed: bool,
}

#[derive(Debug, Default)]
struct Accounts {
    grants: HashMap<String, Grant>,
    log: Vec<AccessRecord>,
}

/// Clonable handle on the accounts the simulated server knows.
#[derive(Clone, Debug, Default)]
pub struct Authorizer {
    state: Arc<Mutex<Accounts>>,
}

impl Authorizer {
    fn lock(&self) -> MutexGuard<'_, Accounts> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers `token` as `system:serviceaccount:{namespace}:{name}`, bound to a Role with
    /// `rules` in `namespace`.
    pub fn grant(&self, token: &str, namespace: &str, name: &str, rules: Vec<PolicyRule>) {
        self.lock().grants.insert(
            token.to_owned(),
            Grant {
                user: format!("system:serviceaccount:{namespace}:{name}"),
                namespace: namespace.to_owned(),
                rules,
            },
        );
    }

    /// Every resource request the service accounts made, in order.
    pub fn access_log(&self) -> Vec<AccessRecord> {
        self.lock().log.clone()
    }

    fn decide(&self, token: &str, request: Option<RequestAttributes>) -> Result<(), ApiError> {
        let mut state = self.lock();
        let grant = state
            .grants
            .get(token)
            .cloned()
            .ok_or(ApiError::Unauthorized)?;
        let Some(request) = request else {
            return Ok(());
        };
        // A RoleBinding grants in its own namespace only: nothing cluster-wide, nothing in
        // other namespaces.
        let allowed = request.namespace == grant.namespace
            && grant.rules.iter().any(|rule| rule_allows(rule, &request));
        state.log.push(AccessRecord {
            user: grant.user.clone(),
            request: request.clone(),
            allowed,
        });
        if allowed {
            Ok(())
        } else {
            Err(ApiError::Forbidden {
                resource: request.resource.clone(),
                group: request.api_group.clone(),
                name: request.name.clone(),
                message: request.forbidden_message(&grant.user),
            })
        }
    }
}

/// Authenticates the bearer token (if any) and authorizes the request.
pub async fn middleware(State(authz): State<Authorizer>, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    if let Some(token) = token {
        let request = RequestAttributes::of(req.method(), req.uri());
        if let Err(err) = authz.decide(&token, request) {
            return err.into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attributes(method: &Method, uri: &str) -> Option<RequestAttributes> {
        RequestAttributes::of(method, &uri.parse().expect("a valid URI"))
    }

    fn attrs(method: Method, path: &str, query: Option<&str>) -> RequestAttributes {
        let uri = match query {
            Some(query) => format!("{path}?{query}"),
            None => path.to_owned(),
        };
        attributes(&method, &uri).expect("a resource request")
    }

    #[test]
    fn request_attributes_follow_the_path_and_method() {
        let a = attrs(
            Method::GET,
            "/api/v1/namespaces/services/pods",
            Some("watch=true&fieldSelector=metadata.name%3Dx"),
        );
        assert_eq!(
            (a.verb.as_str(), a.resource.as_str(), a.name.as_str()),
            ("watch", "pods", "x")
        );
        assert_eq!(a.namespace, "services");
        let a = attrs(Method::GET, "/api/v1/namespaces/services/pods/p1/log", None);
        assert_eq!(
            (a.verb.as_str(), a.combined_resource().as_str()),
            ("get", "pods/log")
        );
        let a = attrs(
            Method::DELETE,
            "/apis/batch/v1/namespaces/services/jobs",
            None,
        );
        assert_eq!(
            (a.verb.as_str(), a.api_group.as_str()),
            ("deletecollection", "batch")
        );
        let a = attrs(
            Method::PATCH,
            "/apis/events.k8s.io/v1/namespaces/services/events/e",
            None,
        );
        assert_eq!(
            (a.verb.as_str(), a.api_group.as_str()),
            ("patch", "events.k8s.io")
        );
        let a = attrs(Method::GET, "/api/v1/namespaces/services", None);
        assert_eq!(
            (a.verb.as_str(), a.resource.as_str(), a.name.as_str()),
            ("get", "namespaces", "services")
        );
        let a = attrs(Method::GET, "/api/v1/nodes", None);
        assert_eq!((a.verb.as_str(), a.namespace.as_str()), ("list", ""));
        assert_eq!(attributes(&Method::GET, "/apis/batch/v1"), None);
        assert_eq!(attributes(&Method::GET, "/version"), None);
    }

    #[test]
    fn rules_match_verbs_groups_resources_and_names() {
        let rule = PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["pods".into()]),
            verbs: vec!["get".into(), "delete".into()],
            ..PolicyRule::default()
        };
        let get = attrs(Method::GET, "/api/v1/namespaces/services/pods/p", None);
        assert!(rule_allows(&rule, &get));
        let log = attrs(Method::GET, "/api/v1/namespaces/services/pods/p/log", None);
        assert!(
            !rule_allows(&rule, &log),
            "a subresource needs its own rule"
        );
        let jobs = attrs(
            Method::GET,
            "/apis/batch/v1/namespaces/services/jobs/j",
            None,
        );
        assert!(!rule_allows(&rule, &jobs));
        let named = PolicyRule {
            resource_names: Some(vec!["other".into()]),
            ..rule
        };
        assert!(!rule_allows(&named, &get));
    }

    #[test]
    fn denials_carry_the_real_message() {
        let authz = Authorizer::default();
        authz.grant("t", "services", "sa", Vec::new());
        let request = attrs(Method::DELETE, "/api/v1/namespaces/services/pods/p", None);
        let err = authz.decide("t", Some(request)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pods \"p\" is forbidden: User \"system:serviceaccount:services:sa\" cannot delete \
             resource \"pods\" in API group \"\" in the namespace \"services\""
        );
        assert!(matches!(
            authz.decide("unknown", None),
            Err(ApiError::Unauthorized)
        ));
        assert!(!authz.access_log()[0].allowed);
    }
}
