//! A corpus of bad input, sent through the driver's own client (v1.5 and
//! v1.6): malformed and mistyped JSON, huge values, unknown methods, unsafe
//! object names, invalid fields, broken YAML and YAML bombs, Unicode edge
//! cases. Each must fail `InvalidArgument` with a message naming the
//! parameter, write nothing, leave the provider healthy, and never put the
//! raw attributes in the log.

mod support;

use serde_json::{Map, Value, json};
use support::deployment::Deployment;
use support::flavour::skip_without_namespaces;
use support::openbao::unique;
use support::provider::{Provider, Volume, driver_clients};

const OBJECTS: &str = "- objectName: k\n  secretPath: secret/data/app\n  secretKey: k\n";

/// One bad request and what the refusal must say.
struct Case {
    what: &'static str,
    attributes: String,
    secrets: String,
    permission: &'static str,
    code: &'static str,
    needle: String,
}

/// Builds cases on top of a valid request.
struct Corpus {
    base: Map<String, Value>,
    secrets: String,
    cases: Vec<Case>,
}

impl Corpus {
    fn push(&mut self, what: &'static str, attributes: String, needle: &str) {
        self.cases.push(Case {
            what,
            attributes,
            secrets: self.secrets.clone(),
            permission: "420",
            code: "InvalidArgument",
            needle: needle.to_owned(),
        });
    }

    /// The valid attributes with `key` set to `value` (a JSON value), or
    /// removed when `value` is null.
    fn with(&self, key: &str, value: Value) -> String {
        let mut map = self.base.clone();
        if value.is_null() {
            map.remove(key);
        } else {
            map.insert(key.to_owned(), value);
        }
        Value::Object(map).to_string()
    }

    /// A parameter set to a bad string; the message must name `needle`.
    fn param(&mut self, what: &'static str, key: &str, value: &str, needle: &str) {
        let attributes = self.with(key, json!(value));
        self.push(what, attributes, needle);
    }

    /// `objects` set to `yaml`.
    fn objects(&mut self, what: &'static str, yaml: &str, needle: &str) {
        self.param(what, "objects", yaml, needle);
    }

    fn secrets(&mut self, what: &'static str, secrets: &str, needle: &str) {
        let attributes = Value::Object(self.base.clone()).to_string();
        self.cases.push(Case {
            what,
            attributes,
            secrets: secrets.to_owned(),
            permission: "420",
            code: "InvalidArgument",
            needle: needle.to_owned(),
        });
    }

    fn permission(&mut self, what: &'static str, permission: &'static str) {
        let attributes = Value::Object(self.base.clone()).to_string();
        self.cases.push(Case {
            what,
            attributes,
            secrets: self.secrets.clone(),
            permission,
            code: "InvalidArgument",
            needle: "permission".into(),
        });
    }
}

fn corpus(d: &Deployment, canary: &str) -> Vec<Case> {
    let Value::Object(mut base) = d.attributes(OBJECTS) else {
        unreachable!()
    };
    // Not a parameter we read: it only shows whether attributes reach the log.
    base.insert("x-canary".into(), json!(canary));
    let valid = Value::Object(base.clone()).to_string();
    let mut c = Corpus {
        base,
        secrets: d.secrets(),
        cases: Vec::new(),
    };

    // attributes: not JSON, not an object, not strings.
    c.push("attributes not JSON", "{not json".into(), "attributes");
    c.push(
        "attributes truncated",
        valid[..valid.len() - 7].into(),
        "attributes",
    );
    c.push("attributes a list", "[]".into(), "attributes");
    c.push("attributes a string", "\"objects\"".into(), "attributes");
    c.push(
        "attributes nested 10000 deep",
        "[".repeat(10_000),
        "attributes",
    );
    c.push(
        "attributes with a BOM",
        format!("\u{feff}{valid}"),
        "attributes",
    );
    c.push(
        "attributes with a lone surrogate",
        valid.replacen("{", r#"{"x":"\ud800","#, 1),
        "attributes",
    );
    let attributes = c.with("objects", json!(5));
    c.push("objects a number", attributes, "attributes");
    let attributes = c.with("roleId", json!(["r"]));
    c.push("roleId a list", attributes, "attributes");
    let attributes = c.with("vaultNamespace", json!({"a": 1}));
    c.push("vaultNamespace a map", attributes, "attributes");
    c.push("attributes empty", String::new(), "roleName");

    // secrets.
    c.secrets("secrets not JSON", "{bad", "secrets");
    c.secrets("secrets a list", "[1]", "secrets");
    c.secrets("secretId a number", r#"{"secretId": 5}"#, "secrets");
    c.secrets("secrets a string", "\"secret\"", "secrets");
    c.secrets("no secretId", r#"{"other":"x"}"#, "secretId");

    // permission.
    c.permission("permission symbolic", "rw-r--r--");
    c.permission("permission negative", "-1");
    c.permission("permission above 0777", "4096");
    c.permission("permission hex", "0x1a4");
    c.permission("permission overflow", "99999999999999999999");

    // Authentication and connection parameters.
    c.param(
        "unknown auth method",
        "vaultAuthMethod",
        "ldap",
        "vaultAuthMethod",
    );
    let attributes = c.with("roleId", Value::Null);
    c.push("no roleId and no roleName", attributes, "roleName");
    c.param(
        "vaultAddress ftp",
        "vaultAddress",
        "ftp://vault:8200",
        "vaultAddress",
    );
    c.param(
        "vaultAddress not a URL",
        "vaultAddress",
        "vault at 8200",
        "vaultAddress",
    );
    c.param(
        "vaultSkipTLSVerify yes",
        "vaultSkipTLSVerify",
        "yes",
        "vaultSkipTLSVerify",
    );
    c.param(
        "vaultNamespace traversal",
        "vaultNamespace",
        "admin/../root",
        "vaultNamespace",
    );
    c.param(
        "vaultNamespace with a space",
        "vaultNamespace",
        "admin/dep loy",
        "vaultNamespace",
    );
    c.param(
        "vaultNamespace control",
        "vaultNamespace",
        "admin/\u{7}bell",
        "vaultNamespace",
    );
    c.param(
        "vaultAuthNamespace empty segment",
        "vaultAuthNamespace",
        "admin//x",
        "vaultAuthNamespace",
    );
    c.param(
        "vaultAuthMountPath traversal",
        "vaultAuthMountPath",
        "../approle",
        "vaultAuthMountPath",
    );
    let mut both = c.base.clone();
    both.insert("vaultAuthMountPath".into(), json!("a"));
    both.insert("vaultKubernetesMountPath".into(), json!("b"));
    c.push(
        "two auth mount paths",
        Value::Object(both).to_string(),
        "vaultAuthMountPath",
    );
    c.param(
        "client cert without key",
        "vaultTLSClientCertPath",
        "/c.pem",
        "vaultTLSClientCertPath",
    );
    let mut k8s = c.base.clone();
    k8s.remove("roleId");
    k8s.insert("roleName".into(), json!("app"));
    c.push(
        "kubernetes without a token",
        Value::Object(k8s.clone()).to_string(),
        "audience",
    );
    k8s.insert(
        "csi.storage.k8s.io/serviceAccount.tokens".into(),
        json!("{not json"),
    );
    c.push(
        "service-account tokens not JSON",
        Value::Object(k8s).to_string(),
        "serviceAccount.tokens",
    );

    // Huge values.
    c.param("huge roleId", "roleId", &"r".repeat(100_000), "roleId");
    c.param(
        "huge objects",
        "objects",
        &format!("{OBJECTS}# {}\n", "x".repeat(1_100_000)),
        "objects",
    );
    c.objects(
        "huge objectName",
        &format!(
            "- objectName: {}\n  secretPath: secret/data/app\n",
            "n/".repeat(3000) + "n"
        ),
        "objectName",
    );
    c.objects(
        "huge template",
        &format!("- objectName: t\n  template: '{}'\n", "x".repeat(70_000)),
        "template",
    );
    let many: String = (0..1001)
        .map(|i| format!("- objectName: o{i}\n  secretPath: secret/data/app\n"))
        .collect();
    c.objects("1001 objects", &many, "at most 1000");

    // objects: YAML.
    c.objects(
        "YAML unclosed",
        "- objectName: [unclosed\n",
        "not valid YAML",
    );
    c.objects(
        "YAML a mapping",
        "objectName: a\nsecretPath: b\n",
        "YAML list",
    );
    c.objects(
        "YAML tab indentation",
        "- objectName: a\n\tsecretPath: b\n",
        "objects",
    );
    c.objects("YAML undefined alias", "- objectName: *nope\n", "objects");
    c.objects(
        "YAML two documents",
        "- objectName: a\n---\n- objectName: b\n",
        "objects",
    );
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (prev, next) in ('a'..='h').zip('b'..='i') {
        bomb.push_str(&format!("{next}: &{next} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
    }
    c.objects("YAML billion laughs (mapping)", &bomb, "objects");
    let mut bomb = String::from(
        "- objectName: x\n  secretPath: secret/data/app\n  secretArgs:\n    a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol,lol]\n",
    );
    for (prev, next) in ('a'..='h').zip('b'..='i') {
        bomb.push_str(&format!("    {next}: &{next} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
    }
    c.objects("YAML billion laughs (secretArgs)", &bomb, "objects");
    c.objects("entry a string", "- just-a-string\n", "objects[0]");

    // objects: fields.
    c.objects(
        "no objectName",
        "- secretPath: secret/data/app\n",
        "objectName is required",
    );
    c.objects(
        "no secretPath",
        "- objectName: a\n",
        "secretPath is required",
    );
    c.objects(
        "objectName a map",
        "- objectName: {a: b}\n  secretPath: s/a\n",
        "objectName must be a string",
    );
    for (what, name, needle) in [
        ("objectName traversal", "../escape", "objectName"),
        ("objectName inner traversal", "a/../../b", "objectName"),
        ("objectName absolute", "/etc/passwd", "objectName"),
        ("objectName unclean //", "a//b", "objectName"),
        ("objectName unclean /./", "a/./b", "objectName"),
        ("objectName trailing slash", "a/", "objectName"),
        ("objectName dot", ".", "objectName"),
        ("objectName ..data", "..data", "objectName"),
        ("objectName ..∕ lookalike", "..\u{2215}x", "objectName"),
    ] {
        c.objects(
            what,
            &format!("- objectName: {name:?}\n  secretPath: secret/data/app\n"),
            needle,
        );
    }
    c.objects(
        "objectName with NUL",
        "- objectName: \"a\\0b\"\n  secretPath: s/a\n",
        "NUL",
    );
    c.objects(
        "objectName element of 256 bytes in 128 characters",
        &format!("- objectName: {}\n  secretPath: s/a\n", "é".repeat(128)),
        "255 bytes",
    );
    c.objects(
        "objectName duplicated",
        "- objectName: a\n  secretPath: s/a\n- objectName: a\n  secretPath: s/b\n",
        "duplicated: a",
    );
    c.objects(
        "objectName both file and directory",
        "- objectName: a\n  secretPath: s/a\n- objectName: a/b\n  secretPath: s/b\n",
        "needs it as a directory",
    );
    let field = |f: &str| format!("- objectName: a\n  secretPath: secret/data/app\n  {f}\n");
    for (what, extra, needle) in [
        ("encoding unknown", "encoding: rot13", "encoding"),
        ("encoding a list", "encoding: [base64]", "encoding"),
        (
            "filePermission 0999",
            "filePermission: 0999",
            "filePermission",
        ),
        (
            "filePermission text",
            "filePermission: rw-r--r--",
            "filePermission",
        ),
        (
            "filePermission setuid",
            "filePermission: 04755",
            "filePermission",
        ),
        (
            "filePermission negative",
            "filePermission: -1",
            "filePermission",
        ),
        (
            "filePermission a list",
            "filePermission: [420]",
            "filePermission",
        ),
        ("method DELETE", "method: DELETE", "method"),
        ("method a list", "method: [GET]", "method"),
        ("secretArgs a list", "secretArgs: [1, 2]", "secretArgs"),
        (
            "secretKey and secretKeyPath",
            "secretKey: a\n  secretKeyPath: b",
            "secretKeyPath",
        ),
        (
            "secretKeyPath empty segment",
            "secretKeyPath: a..b",
            "secretKeyPath",
        ),
        ("render unknown", "render: everything", "render"),
        (
            "render with secretKey",
            "render: keys\n  secretKey: a",
            "render",
        ),
        ("renewalPercent 0", "renewalPercent: 0", "renewalPercent"),
        (
            "renewalPercent 100",
            "renewalPercent: 100",
            "renewalPercent",
        ),
        (
            "renewalPercent text",
            "renewalPercent: lots",
            "renewalPercent",
        ),
        (
            "object vaultNamespace traversal",
            "vaultNamespace: ../x",
            "vaultNamespace",
        ),
    ] {
        c.objects(what, &field(extra), needle);
    }
    c.objects(
        "secretPath traversal",
        "- objectName: a\n  secretPath: secret/../sys/raw\n",
        "secretPath",
    );
    c.objects(
        "secretPath only a query",
        "- objectName: a\n  secretPath: \"?version=1\"\n",
        "secretPath",
    );
    c.objects(
        "secretPath control character",
        "- objectName: a\n  secretPath: \"secret/\\x07\"\n",
        "secretPath",
    );
    c.objects(
        "template with secretPath",
        "- objectName: t\n  template: x\n  secretPath: s/a\n",
        "template object takes only",
    );
    c.cases
}

#[tokio::test]
async fn bad_input_is_invalid_argument_names_the_parameter_and_writes_nothing() {
    let d = Deployment::new("bad-input").await;
    d.put("app", json!({"k": "bad-input-value"})).await;
    let canary = unique("attribute-canary");
    support::secrets::register(&canary);
    let cases = corpus(&d, &canary);
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let provider = Provider::start(&d.bao.addr, &[]);

    for client in driver_clients() {
        let volumes: Vec<Volume> = cases.iter().map(|_| Volume::new()).collect();
        let requests: Vec<Value> = cases
            .iter()
            .zip(&volumes)
            .map(|(case, volume)| {
                json!({"attributes": case.attributes, "secrets": case.secrets,
                       "targetPath": volume.path(), "permission": case.permission})
            })
            .collect();
        let results = client.storm(&provider, &requests, 8);
        assert_eq!(results.len(), cases.len());
        let mut wrong = Vec::new();
        for ((case, result), volume) in cases.iter().zip(&results).zip(&volumes) {
            if result.ok || result.grpc_code != case.code || !result.message.contains(&case.needle)
            {
                wrong.push(format!(
                    "{}: expected {} naming {:?}, got ok={} {} {:?}",
                    case.what, case.code, case.needle, result.ok, result.grpc_code, result.message
                ));
            }
            if std::env::var_os("VSP_TEST_SHOW_MESSAGES").is_some() {
                eprintln!("{}: {} {}", case.what, result.grpc_code, result.message);
            }
            assert!(volume.files().is_empty(), "{}: files written", case.what);
            assert!(
                result.message.len() < 2048,
                "{}: message of {} bytes",
                case.what,
                result.message.len()
            );
        }
        assert!(
            wrong.is_empty(),
            "driver {}:\n{}",
            client.version,
            wrong.join("\n")
        );
    }

    // Still healthy: the same process running, probes green, a good Mount works.
    provider.assert_running();
    assert_eq!(provider.get("/healthz").await.0, 200);
    assert_eq!(provider.get("/readyz").await.0, 200);
    for client in driver_clients() {
        let (result, volume) = client.mount_fresh(&provider, &d.attributes(OBJECTS), &d.secrets());
        result.expect_ok();
        assert_eq!(volume.read("k"), "bad-input-value");
    }
    let log = provider.log();
    assert!(!log.contains(&canary), "raw attributes reached the log");
    assert!(
        !log.contains("xxxxxxxxxxxxxxxx"),
        "a huge value reached the log"
    );
    eprintln!(
        "bad input: {} cases × {} driver clients",
        cases.len(),
        driver_clients().len()
    );
}

/// A namespace that does not exist is not a parameter error: Vault is asked,
/// and the answer is `NotFound`, naming the namespace.
#[tokio::test]
async fn missing_namespace_is_not_found() {
    if skip_without_namespaces() {
        return;
    }
    let d = Deployment::new("no-namespace").await;
    let provider = Provider::start(&d.bao.addr, &[]);
    let missing = format!("{}-missing", d.ns);
    let mut attributes = d.attributes(OBJECTS);
    attributes["vaultNamespace"] = json!(missing);
    for client in driver_clients() {
        let (result, _) = client.mount_fresh(&provider, &attributes, &d.secrets());
        result.expect_err("NotFound", &format!("in namespace {missing}"));
    }
}
