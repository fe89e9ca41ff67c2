//! SMS through an HTTP gateway described in YAML (`config/sms-providers/*.yaml`): URL, method, headers,
//! basic auth, a JSON or form body whose string leaves are minijinja templates, the success statuses and where
//! the provider's message id is in the answer. Numbers go out in E.164; texts are cut to the configured number
//! of segments. 429/5xx/408 and connection failures are transient (honouring `Retry-After`), other 4xx permanent.
//! Only the status is kept of a refusal: gateways quote the number and the text in their answers. With
//! `notify.sms.dir` each SMS is written as a text file instead ([`super::files`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde::Serialize;
use serde_json::{Map, Value};

use super::credentials::Credentials;
use super::files::SmsFile;
use super::segments::{fit, measure};
use super::{Delivery, NotifyConfigError};
use crate::config::{SmsBodyFormat, SmsConfig, SmsProviderConfig};
use crate::domain::validators::mobile_e164;
use crate::store::DueNotification;

/// What a provider's templates see.
#[derive(Debug, Clone, Serialize)]
pub struct SmsValues<'a> {
    /// E.164 with the `+`: `+393471234567`.
    pub to: &'a str,
    /// E.164 digits only: `393471234567`.
    pub to_digits: &'a str,
    pub text: &'a str,
    pub sender: &'a str,
    /// The notification's stable reference (`outbox-ID`), for the gateway's order or reference field.
    pub reference: &'a str,
    /// `gsm` | `ucs2`
    pub encoding: &'static str,
    pub segments: usize,
}

pub struct SmsSender {
    transport: Transport,
    sender: String,
    max_segments: usize,
}

/// Where SMS go.
enum Transport {
    Gateway(Box<Gateway>),
    /// `notify.sms.dir`: one text file per SMS.
    Files(PathBuf),
}

/// An HTTP gateway, its templates compiled.
struct Gateway {
    provider: SmsProviderConfig,
    env: Environment<'static>,
    client: reqwest::Client,
    method: reqwest::Method,
    /// Template names of the headers, in order.
    headers: Vec<(String, String)>,
}

/// Reads a provider file (`config/sms-providers/*.yaml`).
pub fn load_provider(path: &Path) -> Result<SmsProviderConfig, NotifyConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| NotifyConfigError::SmsProviderUnreadable { path: path.to_path_buf(), error })?;
    serde_saphyr::from_str(&text)
        .map_err(|error| NotifyConfigError::SmsProviderInvalid { path: path.to_path_buf(), error: Box::new(error) })
}

/// Every string leaf of a body, with its JSON pointer.
fn leaves(value: &Value, pointer: String, out: &mut Vec<(String, String)>) {
    match value {
        Value::String(s) => out.push((pointer, s.clone())),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                leaves(v, format!("{pointer}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                leaves(v, format!("{pointer}/{}", k.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        _ => {}
    }
}

impl SmsSender {
    pub fn new(config: &SmsConfig, credentials: Credentials) -> Result<SmsSender, NotifyConfigError> {
        let transport = match (&config.dir, &config.provider, &config.provider_file) {
            (Some(_), _, _) if config.url.is_some() => return Err(NotifyConfigError::SmsUrlWithDir),
            (Some(dir), None, None) => Transport::Files(dir.clone()),
            (None, Some(p), None) => Transport::Gateway(Box::new(Gateway::new(p.clone(), config, credentials)?)),
            (None, None, Some(file)) => {
                Transport::Gateway(Box::new(Gateway::new(load_provider(file)?, config, credentials)?))
            }
            _ => return Err(NotifyConfigError::SmsTransport),
        };
        Ok(SmsSender { transport, sender: config.sender.clone(), max_segments: config.max_segments as usize })
    }

    /// The gateway or the directory, for `check-config` and the start-up log (the URL's password masked).
    pub fn describe(&self) -> String {
        match &self.transport {
            Transport::Gateway(g) => {
                format!("provider {} at {}", g.provider.name, super::privacy::mask_password(&g.provider.url))
            }
            Transport::Files(dir) => format!("files in {}", dir.display()),
        }
    }

    /// Renders a request with sample values, for `check-config`; a missing credential is reported apart
    /// (`Ok(Some(warning))`), as it may only exist where the daemon runs.
    pub fn check(&self) -> Result<Option<String>, String> {
        let Transport::Gateway(gateway) = &self.transport else { return Ok(None) };
        let values = SmsValues {
            to: "+393471234567",
            to_digits: "393471234567",
            text: "Prova",
            sender: &self.sender,
            reference: "outbox-1",
            encoding: "gsm",
            segments: 1,
        };
        match gateway.request(&values) {
            Ok(_) => Ok(None),
            Err(e) if e.contains("credential") => Ok(Some(e)),
            Err(e) => Err(e),
        }
    }

    /// Sends one SMS; true when its text was cut to fit `max_segments`.
    pub async fn send(&self, n: &DueNotification, text: &str) -> (Delivery, bool) {
        let Some(to) = mobile_e164(&n.recipient).or_else(|| e164(&n.recipient)) else {
            return (
                Delivery::Permanent {
                    error: "the recipient is not a mobile number in E.164 form".into(),
                    bounce: true,
                },
                false,
            );
        };
        let (text, cut) = fit(text, self.max_segments);
        let length = measure(&text);
        let values = SmsValues {
            to: &to,
            to_digits: to.trim_start_matches('+'),
            text: &text,
            sender: &self.sender,
            reference: &n.reference,
            encoding: length.encoding.as_str(),
            segments: length.segments,
        };
        let delivery = match &self.transport {
            Transport::Gateway(gateway) => gateway.send(&values).await,
            Transport::Files(dir) => {
                let file = SmsFile {
                    to: &to,
                    sender: &self.sender,
                    reference: &n.reference,
                    encoding: values.encoding,
                    segments: values.segments,
                    text: &text,
                };
                match file.write(dir).await {
                    Ok(name) => Delivery::Sent { provider_id: Some(format!("file {name}")) },
                    Err(e) => Delivery::Transient { error: e.to_string(), retry_after: None },
                }
            }
        };
        (delivery, cut)
    }
}

impl Gateway {
    fn new(
        mut provider: SmsProviderConfig,
        config: &SmsConfig,
        credentials: Credentials,
    ) -> Result<Gateway, NotifyConfigError> {
        super::install_crypto_provider();
        if let Some(url) = &config.url {
            provider.url = url.clone();
        }
        let name = provider.name.clone();
        let invalid = |what: &str, error: minijinja::Error| NotifyConfigError::SmsProviderTemplate {
            name: name.clone(),
            template: what.into(),
            error,
        };
        let method = reqwest::Method::from_bytes(provider.method.to_ascii_uppercase().as_bytes())
            .ok()
            .filter(|m| [reqwest::Method::POST, reqwest::Method::PUT].contains(m))
            .ok_or_else(|| NotifyConfigError::SmsProviderMethod {
                name: name.clone(),
                method: provider.method.clone(),
            })?;
        if provider.content_type == SmsBodyFormat::Form
            && provider.body.as_object().is_none_or(|m| m.values().any(|v| v.is_object() || v.is_array()))
        {
            return Err(NotifyConfigError::SmsProviderFormBody { name: name.clone() });
        }
        if !provider.body.is_object() {
            return Err(NotifyConfigError::SmsProviderBody { name: name.clone() });
        }
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let credentials = Arc::new(credentials);
        env.add_function("credential", move |name: String| {
            credentials
                .read(Path::new(&name))
                .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))
        });
        env.add_template_owned("url", provider.url.clone()).map_err(|e| invalid("url", e))?;
        let mut headers = Vec::new();
        for (header, value) in &provider.headers {
            let template = format!("header:{header}");
            env.add_template_owned(template.clone(), value.clone()).map_err(|e| invalid(&template, e))?;
            headers.push((header.clone(), template));
        }
        if let Some(auth) = &provider.basic_auth {
            env.add_template_owned("basic:username", auth.username.clone()).map_err(|e| invalid("basic_auth", e))?;
            env.add_template_owned("basic:password", auth.password.clone()).map_err(|e| invalid("basic_auth", e))?;
        }
        let mut body = Vec::new();
        leaves(&provider.body, String::new(), &mut body);
        for (pointer, source) in body {
            env.add_template_owned(format!("body:{pointer}"), source)
                .map_err(|e| invalid(&format!("body{pointer}"), e))?;
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(provider.timeout_ms))
            .user_agent(concat!("smart-taskd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| NotifyConfigError::SmsProviderClient { name: name.clone(), error })?;
        Ok(Gateway { provider, env, client, method, headers })
    }

    fn render(&self, name: &str, values: &SmsValues) -> Result<String, minijinja::Error> {
        self.env.get_template(name)?.render(values)
    }

    fn render_body(&self, value: &Value, pointer: String, values: &SmsValues) -> Result<Value, minijinja::Error> {
        Ok(match value {
            Value::String(_) => Value::String(self.render(&format!("body:{pointer}"), values)?),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.render_body(v, format!("{pointer}/{i}"), values))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, v) in map {
                    let child = format!("{pointer}/{}", k.replace('~', "~0").replace('/', "~1"));
                    out.insert(k.clone(), self.render_body(v, child, values)?);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }

    /// The request for one message, rendered (URL, headers, body); errors name the template.
    fn request(&self, values: &SmsValues) -> Result<reqwest::RequestBuilder, String> {
        let fail = |what: &str, e: minijinja::Error| format!("SMS provider `{}`: {what}: {e}", self.provider.name);
        let url = self.render("url", values).map_err(|e| fail("url", e))?;
        let mut request = self.client.request(self.method.clone(), url.trim());
        for (header, template) in &self.headers {
            request = request.header(header.as_str(), self.render(template, values).map_err(|e| fail(template, e))?);
        }
        if self.provider.basic_auth.is_some() {
            let user = self.render("basic:username", values).map_err(|e| fail("basic_auth", e))?;
            let password = self.render("basic:password", values).map_err(|e| fail("basic_auth", e))?;
            request = request.basic_auth(user, Some(password));
        }
        let body = self.render_body(&self.provider.body, String::new(), values).map_err(|e| fail("body", e))?;
        Ok(match self.provider.content_type {
            SmsBodyFormat::Json => request.json(&body),
            SmsBodyFormat::Form => {
                let form: Vec<(String, String)> = body
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                            .collect()
                    })
                    .unwrap_or_default();
                request.form(&form)
            }
        })
    }

    /// Posts one SMS. A refusal keeps only its status: the answer may quote the number or the text.
    async fn send(&self, values: &SmsValues<'_>) -> Delivery {
        let request = match self.request(values) {
            Ok(r) => r,
            Err(error) => return Delivery::Transient { error, retry_after: None },
        };
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                let what = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connection failed"
                } else {
                    "request failed"
                };
                return Delivery::Transient { error: format!("SMS gateway unreachable: {what}"), retry_after: None };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let bytes = response.bytes().await.unwrap_or_default();
        let code = status.as_u16();
        let accepted = if self.provider.success_status.is_empty() {
            status.is_success()
        } else {
            self.provider.success_status.contains(&code)
        };
        if accepted {
            let provider_id = self.provider.message_id_pointer.as_deref().and_then(|pointer| {
                let answer: Value = serde_json::from_slice(&bytes).ok()?;
                match answer.pointer(pointer)? {
                    Value::String(s) => Some(s.clone()),
                    Value::Null => None,
                    other => Some(other.to_string()),
                }
            });
            return Delivery::Sent { provider_id };
        }
        let error = format!("HTTP {code} {}", status.canonical_reason().unwrap_or("error"));
        if code == 429 || code == 408 || status.is_server_error() {
            Delivery::Transient { error, retry_after }
        } else {
            Delivery::Permanent { error, bounce: self.provider.recipient_error_status.contains(&code) }
        }
    }
}

/// A number already in international form (`+` and 7 to 15 digits), for recipients outside Italy.
fn e164(s: &str) -> Option<String> {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let digits = compact.strip_prefix('+')?;
    (digits.len() >= 7 && digits.len() <= 15 && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0'))
        .then_some(compact)
}

/// `Retry-After`: delay-seconds or an HTTP-date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let ms = at.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    Some(Duration::from_millis(ms.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn numbers_outside_italy_pass_in_e164() {
        assert_eq!(e164("+44 7911 123456").as_deref(), Some("+447911123456"));
        assert_eq!(e164("3471234567"), None);
    }

    #[test]
    fn the_shipped_providers_render() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/sms-providers");
        let creds = tempfile::tempdir().expect("tempdir");
        for name in ["skebby-user-key", "skebby-access-token", "twilio-account-sid", "twilio-auth-token"] {
            std::fs::write(creds.path().join(name), "x").expect("write");
        }
        for file in ["skebby.yaml", "twilio.yaml"] {
            let config = SmsConfig {
                dir: None,
                provider_file: Some(dir.join(file)),
                provider: None,
                url: None,
                sender: "INPS".into(),
                max_segments: 2,
            };
            let sender = SmsSender::new(&config, Credentials::new(Some(creds.path()))).expect(file);
            assert_eq!(sender.check(), Ok(None), "{file}");
        }
    }
}
