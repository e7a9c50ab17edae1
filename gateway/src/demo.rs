//! `skygate demo`: three simulated serverless backends in this process
//! (`aws-us-east-1`, `azure-eastus`, `gcp-us-central1`, each with a small cold
//! start), and the gateway in front of them on the embedded `config/demo.yaml`.

use skygate_backends::sim::{model::SimSettings, Platform, Sim};
use std::collections::HashMap;
use std::net::SocketAddr;

/// The demo config, as shipped in `config/demo.yaml`.
pub const DEMO_YAML: &str = include_str!("../../config/demo.yaml");
/// The demo JWT issuer's public keys.
pub const DEMO_JWKS: &str = include_str!("../../config/demo/jwks.json");
/// The demo JWT issuer's private key. DEMO-ONLY: it is public.
pub const DEMO_JWT_KEY: &str = include_str!("../../config/demo/jwt-demo.key");

/// The demo's Cedar policies.
pub const DEMO_POLICY: &str = include_str!("../../policies/demo.cedar");

/// Writes a demo file where the demo config reads it; returns the path.
fn write_demo_file(what: &str, ext: &str, text: &str) -> Result<String, String> {
    use std::io::Write;
    // A fresh, unpredictable name, created new (never through a symlink).
    let path = std::env::temp_dir().join(format!(
        "skygate-demo-{what}-{}-{:016x}.{ext}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("cannot write the demo {what} to {}: {e}", path.display()))?;
    Ok(path.display().to_string())
}

/// A token from the demo issuer: `sub`, `tenant`, `groups`, valid for `ttl`.
pub fn demo_token(
    sub: &str,
    tenant: &str,
    groups: &[String],
    ttl: std::time::Duration,
) -> Result<String, String> {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(DEMO_JWT_KEY.as_bytes())
        .map_err(|e| format!("the demo key does not load: {e}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = serde_json::json!({
        "iss": "skygate-demo", "aud": "skygate", "sub": sub, "tenant": tenant,
        "groups": groups, "iat": now, "exp": now + ttl.as_secs(),
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("skygate-demo-1".into());
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| format!("signing: {e}"))
}

/// The simulated clouds, each speaking its platform's own API: (name, env
/// var for its URL, cold start ms, platform).
const CLOUDS: &[(&str, &str, u64, Platform)] = &[
    ("aws-us-east-1", "DEMO_AWS_URL", 250, Platform::Bedrock),
    ("azure-eastus", "DEMO_AZURE_URL", 400, Platform::AzureOpenai),
    (
        "gcp-us-central1",
        "DEMO_GCP_URL",
        300,
        Platform::GcpCloudRun,
    ),
    (
        "aws-lambda-us-east-1",
        "DEMO_LAMBDA_URL",
        300,
        Platform::AwsLambda,
    ),
    (
        "azure-functions-eastus",
        "DEMO_FUNCTIONS_URL",
        400,
        Platform::AzureFunctions,
    ),
];

/// Starts the simulators and returns `${VAR}` → URL for the demo config.
pub fn start_clouds() -> Result<HashMap<String, String>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("demo-clouds".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(format!("cannot start the simulators' runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                let mut urls = HashMap::new();
                for (name, var, cold, platform) in CLOUDS {
                    let settings = SimSettings {
                        cold_start_ms: *cold,
                        idle_timeout_ms: 30_000,
                        tokens: 24,
                        token_delay_ms: 40,
                        ..SimSettings::default()
                    };
                    let sim = Sim::new(*name, settings).on_platform(*platform);
                    match skygate_backends::sim::spawn(sim, "127.0.0.1:0").await {
                        Ok(addr) => {
                            urls.insert(var.to_string(), format!("http://{addr}"));
                            // Its simulated Google mints the gateway's ID
                            // tokens (demo-only: a key made at start).
                            if *platform == Platform::GcpCloudRun {
                                skygate_backends::kinds::gcp::use_metadata_server(addr.to_string());
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(format!("cannot start simulator {name}: {e}")));
                            return;
                        }
                    }
                }
                let _ = tx.send(Ok(urls));
                std::future::pending::<()>().await;
            });
        })
        .map_err(|e| format!("cannot start the simulators' thread: {e}"))?;
    rx.recv()
        .map_err(|_| "the simulators did not start".to_string())?
}

/// Runs `f` on the demo's config as `skygate demo` loads it, with no
/// simulator started (its backends' addresses are placeholders): for
/// `skygate policy check --demo`. The demo's files are removed after.
pub fn with_config<T>(f: impl FnOnce(&skygate_config::Config) -> T) -> Result<T, String> {
    let mut env: HashMap<String, String> = CLOUDS
        .iter()
        .map(|(_, var, ..)| (var.to_string(), "http://127.0.0.1:9".to_string()))
        .collect();
    let jwks = write_demo_file("jwks", "json", DEMO_JWKS)?;
    let policy = match write_demo_file("policy", "cedar", DEMO_POLICY) {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::remove_file(&jwks);
            return Err(e);
        }
    };
    env.insert("DEMO_JWKS_FILE".into(), jwks.clone());
    env.insert("DEMO_POLICY_FILE".into(), policy.clone());
    let source = crate::reload::Source::Embedded {
        name: "config/demo.yaml",
        text: DEMO_YAML,
        env,
        listen: None,
        admin_listen: None,
    };
    let out = source.load().map_err(|e| e.to_string()).map(|c| f(&c));
    let _ = std::fs::remove_file(jwks);
    let _ = std::fs::remove_file(policy);
    out
}

/// Runs the demo until stopped.
pub fn run(
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    redis: Option<String>,
) -> Result<(), String> {
    let urls = start_clouds()?;
    let mut env = urls.clone();
    env.insert(
        "DEMO_JWKS_FILE".into(),
        write_demo_file("jwks", "json", DEMO_JWKS)?,
    );
    env.insert(
        "DEMO_POLICY_FILE".into(),
        write_demo_file("policy", "cedar", DEMO_POLICY)?,
    );
    let text: &'static str = match redis {
        None => DEMO_YAML,
        // Once per process: the demo's config with a `state:` section.
        Some(url) => Box::leak(with_redis(&url).into_boxed_str()),
    };
    let source = crate::reload::Source::Embedded {
        name: "config/demo.yaml",
        text,
        env,
        listen,
        admin_listen,
    };
    let mut config = source.load().map_err(|e| e.to_string())?;
    // The demo's keys are plaintext on purpose (they are printed below).
    config
        .warnings
        .retain(|w| !w.message.starts_with("a plaintext API key"));
    eprintln!("{}", banner(config.listen, config.admin.listen, &urls));
    crate::server::run(config, source)
}

/// The demo config with its limits in Redis at `url` (a URL that is not
/// one fails validation with the usual message).
fn with_redis(url: &str) -> String {
    // Quoted as a YAML string, so no URL can add keys of its own.
    format!(
        "{DEMO_YAML}state: {{ redis: {} }}\n",
        serde_json::Value::String(url.to_string())
    )
}

fn banner(listen: SocketAddr, admin: SocketAddr, urls: &HashMap<String, String>) -> String {
    let clouds: Vec<String> = CLOUDS
        .iter()
        .map(|(name, var, cold, platform)| {
            format!(
                "  {name:<23} {}  {:<15} (cold start {cold} ms)",
                urls.get(*var).map_or("?", String::as_str),
                platform.as_str(),
            )
        })
        .collect();
    format!(
        r#"
Skygate demo: gateway on http://{listen}, admin on http://{admin}
Simulated serverless backends, each speaking its platform's own API (SigV4 for AWS,
api-key and function keys for Azure, Google-signed ID tokens for Cloud Run):
{clouds}
Demo-only credentials: API key sk-skygate-demo, admin token skygate-demo-admin.

Try:
  curl -s http://{listen}/v1/chat/completions -H 'Authorization: Bearer sk-skygate-demo' \
    -H 'Content-Type: application/json' -d '{{"model":"demo-chat","messages":[{{"role":"user","content":"hi"}}]}}'
  curl -sN http://{listen}/v1/chat/completions -H 'Authorization: Bearer sk-skygate-demo' \
    -H 'Content-Type: application/json' -d '{{"model":"demo-chat","stream":true,"messages":[{{"role":"user","content":"stream me a story"}}]}}'
  curl -s http://{listen}/v1/embeddings -H 'Authorization: Bearer sk-skygate-demo' \
    -H 'Content-Type: application/json' -d '{{"model":"demo-embed","input":"hello"}}'
  curl -s http://{listen}/v1/functions/anomaly-score -H 'Authorization: Bearer sk-skygate-demo' \
    -H 'Content-Type: application/json' -d '{{"readings":[20.1,20.3,19.9,20.0,20.2,55.0]}}'
  printf '\x89PNG\r\n\x1a\n-demo-image' | curl -s http://{listen}/v1/functions/image-recognition \
    -H 'Authorization: Bearer sk-skygate-demo' -H 'Content-Type: image/png' --data-binary @-
  curl -s http://{admin}/metrics -H 'Authorization: Bearer skygate-demo-admin' | grep skygate_

Rate limits: sk-skygate-demo-limited may make 5 chat requests a minute; the sixth gets 429
(watch the x-ratelimit-* headers count down):
  for i in 1 2 3 4 5 6; do curl -s -o /dev/null -D - http://{listen}/v1/chat/completions \
    -H 'Authorization: Bearer sk-skygate-demo-limited' -H 'Content-Type: application/json' \
    -d '{{"model":"demo-chat","messages":[{{"role":"user","content":"hi"}}]}}' | grep -iE '^HTTP|remaining-requests|retry-after'; done

Cache: the chat route answers identical requests of one tenant from the cache for 5 minutes
(run the first chat request twice: x-skygate-cache goes from miss to hit; docs/cache.md).

Sign in with a JWT from the demo issuer (its key is demo-only). Policies
(policies/demo.cedar) let contractors chat but not embed; tenant acme stays off gcp:
  TOKEN=$(skygate demo-token --sub alice --tenant acme --group contractors)
  curl -s http://{listen}/v1/chat/completions -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' -d '{{"model":"demo-chat","messages":[{{"role":"user","content":"hi"}}]}}'
  curl -s http://{listen}/v1/embeddings -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' -d '{{"model":"demo-embed","input":"hello"}}'    # 403
  curl -s http://{listen}/v1/models -H "Authorization: Bearer $TOKEN"                  # demo-chat only

Operate it (admin token skygate-demo-admin):
  curl -s http://{admin}/admin/backends -H 'Authorization: Bearer skygate-demo-admin'
  curl -s -XPUT http://{admin}/admin/routes/chat/weights -H 'Authorization: Bearer skygate-demo-admin' \
    -d '{{"aws-us-east-1": 100, "azure-eastus": 0, "gcp-us-central1": 0}}'
  curl -s -XPOST http://{admin}/admin/backends/azure-eastus/drain -H 'Authorization: Bearer skygate-demo-admin'
  curl -s -XPOST http://{admin}/admin/reload -H 'Authorization: Bearer skygate-demo-admin'

OpenAI SDK (Python):
  from openai import OpenAI
  client = OpenAI(base_url="http://{listen}/v1", api_key="sk-skygate-demo")
  print(client.chat.completions.create(model="demo-chat", messages=[{{"role": "user", "content": "hi"}}]).choices[0].message.content)
"#,
        clouds = clouds.join("\n")
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn demo_config_is_valid() {
        let jwks = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/demo/jwks.json");
        let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/demo.cedar");
        let env = |name: &str| {
            Some(match name {
                "DEMO_JWKS_FILE" => jwks.to_string(),
                "DEMO_POLICY_FILE" => policy.to_string(),
                _ => format!("http://127.0.0.1:1/{name}"),
            })
        };
        let c = skygate_config::load_str(super::DEMO_YAML, "config/demo.yaml", &env).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9090");
        let names: Vec<&str> = c.backends.iter().map(|b| b.name.as_str()).collect();
        for cloud in ["aws-us-east-1", "azure-eastus", "gcp-us-central1"] {
            assert!(names.contains(&cloud));
        }
        let chat = c.routes.iter().find(|r| r.name == "chat").unwrap();
        assert_eq!(chat.models, ["demo-chat"]);
        assert_eq!(chat.targets.len(), 3);
        assert_eq!(chat.retries.max_attempts, 3);
        assert_eq!(
            chat.cache.as_ref().map(|c| c.ttl),
            Some(std::time::Duration::from_secs(300))
        );
        // Each cloud speaks its own platform.
        let kind = |name: &str| c.backends.iter().find(|b| b.name == name).unwrap().kind;
        use skygate_config::BackendKind as K;
        assert_eq!(kind("aws-us-east-1"), K::Bedrock);
        assert_eq!(kind("azure-eastus"), K::AzureOpenai);
        assert_eq!(kind("gcp-us-central1"), K::GcpCloudRun);
        assert_eq!(kind("anomaly-fn"), K::AzureFunctions);
        assert_eq!(kind("image-recognition"), K::AwsLambda);
        assert!(c.backends.iter().all(|b| b.breaker.enabled));
        assert!(c.routes.iter().any(|r| r.models == ["demo-embed"]));
        let limited = c.limits.iter().find(|l| l.name == "demo-limited").unwrap();
        assert_eq!(
            limited.rates,
            [(skygate_config::RateUnit::RequestsPerMinute, 5)]
        );
        assert_eq!(limited.store, skygate_config::LimitStore::Local);
        let shared = skygate_config::load_str(
            &super::with_redis("redis://127.0.0.1:6399"),
            "config/demo.yaml",
            &env,
        )
        .unwrap();
        assert!(shared
            .limits
            .iter()
            .all(|l| l.store == skygate_config::LimitStore::Redis));
        let (errors, warnings) = skygate_plugins::policy::check(&c);
        assert!(
            errors.is_empty() && warnings.is_empty(),
            "{errors:?} {warnings:?}"
        );
    }
}
