//! `http` connections: an API's base URL (a step's `path` is joined to it) and how requests
//! authenticate — `none`, `bearer` (the token is the credential), `basic` (a user; the password
//! is the credential) or `oauth2` client credentials (token endpoint, client id, optional scope,
//! how the client authenticates to the token endpoint — HTTP Basic or the request body, RFC 6749
//! §2.3.1; the client secret is the credential, and the access token it buys is cached by the
//! runtime until shortly before it expires).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Settings;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpSettings {
    /// `https://api.example.com/v1`: requests go to this URL followed by the step's `path`.
    pub base_url: String,
    pub auth: HttpAuth,
}

/// How requests through an `http` connection authenticate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HttpAuth {
    None,
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// `Authorization: Basic base64(user:password)`.
    Basic {
        user: String,
    },
    /// OAuth2 client credentials (RFC 6749 §4.4): a token from `token_url`, sent as a bearer token.
    Oauth2 {
        token_url: String,
        client_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
        /// How the client authenticates to the token endpoint (default: HTTP Basic).
        #[serde(default)]
        client_auth: ClientAuth,
    },
}

/// How an OAuth2 client sends its credentials to the token endpoint (RFC 6749 §2.3.1; the
/// names are OpenID Connect's `token_endpoint_auth_method` values).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// `Authorization: Basic base64(urlencode(client_id):urlencode(client_secret))`.
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body, for servers that do not take Basic.
    ClientSecretPost,
}

impl ClientAuth {
    pub const NAMES: [&'static str; 2] = ["client_secret_basic", "client_secret_post"];

    pub fn name(self) -> &'static str {
        match self {
            ClientAuth::ClientSecretBasic => "client_secret_basic",
            ClientAuth::ClientSecretPost => "client_secret_post",
        }
    }
}

impl HttpAuth {
    pub fn name(&self) -> &'static str {
        match self {
            HttpAuth::None => "none",
            HttpAuth::Bearer => "bearer",
            HttpAuth::Basic { .. } => "basic",
            HttpAuth::Oauth2 { .. } => "oauth2",
        }
    }

    /// What the credential is, if the scheme has one.
    pub fn credential(&self) -> Option<&'static str> {
        match self {
            HttpAuth::None => None,
            HttpAuth::Bearer => Some("bearer token"),
            HttpAuth::Basic { .. } => Some("password"),
            HttpAuth::Oauth2 { .. } => Some("client secret"),
        }
    }
}

/// Whether `url` is an absolute http(s) URL with a host, and no credentials, query or fragment.
fn url_problem(url: &str) -> Option<&'static str> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Some("has no host");
    }
    if host.contains('@') {
        return Some("holds credentials: put them in the connection's credential instead");
    }
    if url.contains(['?', '#']) || url.chars().any(char::is_whitespace) {
        return Some("must not hold a query, a fragment or spaces");
    }
    None
}

fn check_url(s: &mut Settings<'_>, key: &'static str, url: &str) {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        s.problem(key, format!("`{url}` is not an http(s) URL"));
    } else if let Some(why) = url_problem(url) {
        s.problem(key, format!("`{url}` {why}"));
    }
}

impl HttpSettings {
    pub(crate) fn read(s: &mut Settings<'_>) -> Option<Self> {
        let base_url = s.required("base_url", "the API's base URL");
        if let Some(u) = &base_url {
            check_url(s, "base_url", u);
        }
        let auth = s.choice("auth", &["none", "bearer", "basic", "oauth2"]);
        let user = s.optional("user");
        let token_url = s.optional("token_url");
        let client_id = s.optional("client_id");
        let scope = s.optional("scope");
        let client_auth = s.optional("client_auth");
        let client_auth_choice = match client_auth.as_deref() {
            None | Some("client_secret_basic") => Some(ClientAuth::ClientSecretBasic),
            Some("client_secret_post") => Some(ClientAuth::ClientSecretPost),
            Some(v) => {
                s.problem("client_auth", format!("`{v}` is not one of {}", ClientAuth::NAMES.join(", ")));
                None
            }
        };
        let only = |s: &mut Settings<'_>, key: &str, present: bool, scheme: &str| {
            if present {
                s.problem(key, format!("is only a setting of {scheme} auth"));
            }
        };
        let scheme = auth?;
        let auth = match scheme {
            "basic" => {
                if user.is_none() {
                    s.problem("user", "basic auth needs the user name (`--set user=…`)");
                }
                Some(HttpAuth::Basic { user: user.clone().unwrap_or_default() })
            }
            "oauth2" => {
                match &token_url {
                    None => {
                        s.problem("token_url", "oauth2 auth needs the token endpoint (`--set token_url=https://…`)")
                    }
                    Some(u) => check_url(s, "token_url", u),
                }
                if client_id.is_none() {
                    s.problem("client_id", "oauth2 auth needs the client id (`--set client_id=…`)");
                }
                client_auth_choice.map(|client_auth| HttpAuth::Oauth2 {
                    token_url: token_url.clone().unwrap_or_default(),
                    client_id: client_id.clone().unwrap_or_default(),
                    scope: scope.clone(),
                    client_auth,
                })
            }
            "bearer" => Some(HttpAuth::Bearer),
            _ => Some(HttpAuth::None),
        };
        only(s, "user", user.is_some() && scheme != "basic", "basic");
        for (key, present) in [
            ("token_url", token_url.is_some()),
            ("client_id", client_id.is_some()),
            ("scope", scope.is_some()),
            ("client_auth", client_auth.is_some()),
        ] {
            only(s, key, present && scheme != "oauth2", "oauth2");
        }
        Some(Self { base_url: base_url?.trim_end_matches('/').to_string(), auth: auth? })
    }

    pub(crate) fn describe(&self) -> BTreeMap<&'static str, String> {
        let mut d = BTreeMap::from([("base_url", self.base_url.clone()), ("auth", self.auth.name().to_string())]);
        match &self.auth {
            HttpAuth::Basic { user } => {
                d.insert("user", user.clone());
            }
            HttpAuth::Oauth2 { token_url, client_id, scope, client_auth } => {
                d.insert("token_url", token_url.clone());
                d.insert("client_id", client_id.clone());
                d.insert("client_auth", client_auth.name().to_string());
                if let Some(scope) = scope {
                    d.insert("scope", scope.clone());
                }
            }
            HttpAuth::None | HttpAuth::Bearer => {}
        }
        d
    }

    /// The URL of a request to `path` (`/orders/7` or `orders/7`): the base URL, one `/`, the path.
    /// A path that names another origin (`//host`, `http://…`) is refused: the connection's
    /// credential goes only to its own base URL.
    pub fn url_for(&self, path: &str) -> Result<String, String> {
        let path = path.trim();
        if path.contains("://") || path.starts_with("//") {
            return Err(format!("`{path}` is not a path: the connection's base URL gives scheme and host"));
        }
        if path.split(['/', '?']).any(|seg| seg == "..") {
            return Err(format!("`{path}` climbs out of the base URL with `..`"));
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("`{path}` holds spaces or control characters (encode them)"));
        }
        let path = path.trim_start_matches('/');
        Ok(if path.is_empty() { self.base_url.clone() } else { format!("{}/{path}", self.base_url) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_the_base_url_and_stay_under_it() {
        let h = HttpSettings { base_url: "https://api.example.com/v1".into(), auth: HttpAuth::None };
        assert_eq!(h.url_for("/orders/7").unwrap(), "https://api.example.com/v1/orders/7");
        assert_eq!(h.url_for("orders").unwrap(), "https://api.example.com/v1/orders");
        assert_eq!(h.url_for("").unwrap(), "https://api.example.com/v1");
        for bad in ["http://evil.test/x", "//evil.test/x", "/../admin", "a b"] {
            assert!(h.url_for(bad).is_err(), "{bad}");
        }
    }
}
