//! Token auth: requests need `Authorization: Bearer <token>` with one of the configured tokens,
//! else 401 with a go-micro JSON body. Tokens come from `--auth-tokens` (`MICRO_API_AUTH_TOKENS`)
//! and/or `--auth-token-file` (one per line); they are never logged, and a request's token is
//! compared with every configured one in full, in constant time.

use std::collections::HashSet;
use std::sync::Arc;

use axum_core::body::Body;
use http::{header, Request, StatusCode};
use tower::ServiceExt;

use crate::api::error;
use crate::api::plugin::{HttpService, Plugin, PluginContext, PluginError, PluginLayer};

/// Bearer-token auth.
#[derive(Default)]
pub struct TokenAuth {
    tokens: Arc<HashSet<String>>,
}

impl std::fmt::Debug for TokenAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The count only: tokens are secrets.
        f.debug_struct("TokenAuth")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl Plugin for TokenAuth {
    fn name(&self) -> &'static str {
        "auth"
    }

    fn flags(&self) -> Vec<clap::Arg> {
        vec![
            clap::Arg::new("auth-tokens")
                .long("auth-tokens")
                .env("MICRO_API_AUTH_TOKENS")
                .hide_env_values(true)
                .value_delimiter(',')
                .value_name("TOKEN,…")
                .help("Require `Authorization: Bearer TOKEN` with one of these tokens"),
            clap::Arg::new("auth-token-file")
                .long("auth-token-file")
                .env("MICRO_API_AUTH_TOKEN_FILE")
                .value_name("FILE")
                .help(
                    "Read accepted bearer tokens from FILE, one per line (blank lines and lines \
                     starting with # are left out)",
                ),
        ]
    }

    fn init(&mut self, flags: &clap::ArgMatches, _ctx: &PluginContext) -> Result<(), PluginError> {
        let mut tokens: HashSet<String> = flags
            .get_many::<String>("auth-tokens")
            .into_iter()
            .flatten()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        // Given, but with no token in it (`--auth-tokens ''`, a secret that came out empty):
        // refused rather than taken for "no auth", which would open the gateway to everyone.
        let given = matches!(
            flags.value_source("auth-tokens"),
            Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
        );
        if let Some(why) = tokens.iter().find_map(|t| unusable(t)) {
            return Err(PluginError::Init {
                plugin: "auth".into(),
                message: format!("--auth-tokens (MICRO_API_AUTH_TOKENS): {why}"),
            });
        }
        if given && tokens.is_empty() {
            return Err(PluginError::Init {
                plugin: "auth".into(),
                message: "--auth-tokens (MICRO_API_AUTH_TOKENS) holds no token; give at least \
                          one, or leave the flag out to run without token auth"
                    .into(),
            });
        }
        if let Some(file) = flags.get_one::<String>("auth-token-file") {
            let read_err = |err: String| PluginError::Init {
                plugin: "auth".into(),
                message: format!("could not read --auth-token-file {file}: {err}"),
            };
            let bytes = rmicro_runtime::config::read_small_file(std::path::Path::new(file))
                .map_err(|err| read_err(err.to_string()))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| read_err("it is not UTF-8 text".to_string()))?;
            // An editor's byte order mark would otherwise start the first token.
            let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
            for (n, line) in text.lines().enumerate() {
                let token = line.trim();
                if token.is_empty() || token.starts_with('#') {
                    continue;
                }
                if let Some(why) = unusable(token) {
                    return Err(PluginError::Init {
                        plugin: "auth".into(),
                        message: format!("--auth-token-file {file}, line {}: {why}", n + 1),
                    });
                }
                tokens.insert(token.to_string());
            }
            if tokens.is_empty() {
                return Err(PluginError::Init {
                    plugin: "auth".into(),
                    message: format!(
                        "--auth-token-file {file} holds no token; every request would be refused"
                    ),
                });
            }
        }
        self.tokens = Arc::new(tokens);
        Ok(())
    }

    fn layer(&self) -> Option<PluginLayer> {
        if self.tokens.is_empty() {
            return None;
        }
        let tokens = Arc::clone(&self.tokens);
        Some(PluginLayer::new(tower::layer::layer_fn(
            move |inner: HttpService| {
                let tokens = Arc::clone(&tokens);
                HttpService::new(tower::service_fn(move |req: Request<Body>| {
                    let inner = inner.clone();
                    // One `Authorization` header (it is no list, RFC 9110 §5.3): with two, the
                    // node might read another than the one checked here.
                    let mut given = req.headers().get_all(header::AUTHORIZATION).iter();
                    let (first, second) = (given.next(), given.next());
                    let twice = second.is_some();
                    let allowed = first
                        .filter(|_| !twice)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| {
                            // The scheme is case-insensitive (RFC 9110 §11.1).
                            let (scheme, token) = v.trim_start().split_once(' ')?;
                            scheme.eq_ignore_ascii_case("bearer").then_some(token)
                        })
                        .is_some_and(|t| known(&tokens, t.trim()));
                    async move {
                        if allowed {
                            return inner.oneshot(req).await;
                        }
                        if twice {
                            return Ok(error::response(
                                StatusCode::BAD_REQUEST,
                                "more than one Authorization header; send one",
                            ));
                        }
                        let mut resp = error::response(
                            StatusCode::UNAUTHORIZED,
                            "missing or invalid bearer token",
                        );
                        resp.headers_mut().insert(
                            header::WWW_AUTHENTICATE,
                            header::HeaderValue::from_static("Bearer"),
                        );
                        Ok(resp)
                    }
                }))
            },
        )))
    }
}

/// Whether `given` is one of `tokens`. Each token is compared in full, in constant time, and
/// all of them every time: how long the answer takes does not tell how much of a guess was
/// right (a set's lookup, or `==`, stops at the first differing byte), only whether a token of
/// its length is configured.
fn known(tokens: &HashSet<String>, given: &str) -> bool {
    use subtle::ConstantTimeEq;
    let found = tokens.iter().fold(subtle::Choice::from(0), |found, token| {
        found | token.as_bytes().ct_eq(given.as_bytes())
    });
    found.into()
}

/// Why `token` can never match a request, if it cannot (said without the token: tokens are
/// never shown): an `Authorization` header carries visible ASCII only, a space ends the token.
fn unusable(token: &str) -> Option<&'static str> {
    (!token.bytes().all(|b| b.is_ascii_graphic())).then_some(
        "a token holds a character no `Authorization` header can carry (a space, a control \
         character or non-ASCII), so it could never match; use visible ASCII only",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_whole_configured_token_is_known() {
        let tokens: HashSet<String> = ["s3cret-one", "other"].map(String::from).into();
        assert!(known(&tokens, "s3cret-one"));
        assert!(known(&tokens, "other"));
        for guess in ["s3cret", "s3cret-one2", "S3CRET-ONE", "", "othe", "other "] {
            assert!(!known(&tokens, guess), "{guess:?} was taken");
        }
        assert!(!known(&HashSet::new(), ""));
    }
}
