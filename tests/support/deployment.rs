//! A deployment namespace set up the way the seed workflow describes it.
#![allow(dead_code)]

use serde_json::{Value, json};

use super::openbao::{OpenBao, deployment_namespace};

/// A deployment namespace with KV v2 at `secret`, an AppRole `app` whose
/// policy reads only `secret/data/app*`, and its credentials.
pub struct Deployment {
    pub bao: &'static OpenBao,
    pub ns: String,
    pub role_id: String,
    pub secret_id: String,
}

impl Deployment {
    pub async fn new(prefix: &str) -> Deployment {
        let bao = OpenBao::shared();
        let ns = deployment_namespace(bao, prefix).await;
        bao.write_policy(
            &ns,
            "app-read",
            r#"path "secret/data/app*" { capabilities = ["read"] }"#,
        )
        .await;
        let (role_id, secret_id) = bao
            .approle(&ns, "approle", "app", &["app-read"], json!({}))
            .await;
        Deployment {
            bao,
            ns,
            role_id,
            secret_id,
        }
    }

    /// SecretProviderClass parameters as the driver sends them, for `objects`.
    pub fn attributes(&self, objects: &str) -> Value {
        json!({
            "roleId": self.role_id,
            "vaultNamespace": self.ns,
            "objects": objects,
            "secretProviderClass": "app-secrets",
            "csi.storage.k8s.io/pod.name": "app-0",
            "csi.storage.k8s.io/pod.namespace": "default",
            "csi.storage.k8s.io/pod.uid": "0b7e2f8a-1111-2222-3333-444455556666",
            "csi.storage.k8s.io/serviceAccount.name": "app",
            "csi.storage.k8s.io/ephemeral": "true",
        })
    }

    pub fn secrets(&self) -> String {
        json!({ "secretId": self.secret_id }).to_string()
    }

    pub async fn put(&self, path: &str, data: Value) -> u64 {
        self.bao.kv2_put(&self.ns, "secret", path, data).await
    }

    /// Logins so far: the tokens that exist in the namespace.
    pub async fn token_count(&self) -> usize {
        let (status, body) = self
            .bao
            .api_status("LIST", &self.ns, "auth/token/accessors", None)
            .await;
        if status == 404 {
            return 0;
        }
        body["data"]["keys"].as_array().map_or(0, Vec::len)
    }
}
