{{/*
One provider per cluster (its socket is per node), so the names are fixed, the same as the
kustomize install's, and the labels too: `helm template` renders exactly what
`kustomize build daemonset/` does. `helm install` adds app.kubernetes.io/managed-by: Helm and
the meta.helm.sh/release-* annotations to every object it creates.
*/}}
{{- define "vsp.name" -}}vault-secrets-provider{{- end -}}

{{- define "vsp.labels" -}}
app.kubernetes.io/name: {{ include "vsp.name" . }}
{{- end -}}

{{/* Whether anything is rendered: csi.enabled and global.enabled, as in HashiCorp's chart. */}}
{{- define "vsp.enabled" -}}
{{- if and (eq (toString .Values.csi.enabled) "true") (eq (toString .Values.global.enabled) "true") -}}true{{- end -}}
{{- end -}}

{{/* A value that is a map, or a string templated with tpl (HashiCorp's convention). */}}
{{- define "vsp.mapOrTpl" -}}
{{- $value := index . 0 -}}{{- $root := index . 1 -}}
{{- if kindIs "string" $value -}}
{{- tpl $value $root | trim -}}
{{- else -}}
{{- toYaml $value -}}
{{- end -}}
{{- end -}}

{{/*
The binary's defaults of the flags in `serve` (src/cli.rs): a flag is passed only when its
value differs. tests/manifests.rs checks values.yaml against the binary's own definitions.
*/}}
{{- define "vsp.serveDefaults" -}}
endpointPermissions: "0600"
allowedPeerUids: []
readyzVault: false
mountTimeout: 30s
tokenCacheSize: 10000
maxResponseSize: 4194304
leaseCacheSize: 10000
podStateIdleTimeout: 30m
refreshInterval: 2m
maxTrackedVolumes: 10000
revokeOnIdle: false
revokeTokensOnShutdown: false
versionKeyFile: ""
kubeApiServer: ""
kubeCaFile: ""
kubeTokenFile: ""
vaultNamespace: ""
vaultTlsCaCert: ""
vaultTlsCaDirectory: ""
vaultTlsServerName: ""
vaultTlsClientCert: ""
vaultTlsClientKey: ""
vaultTlsSkipVerify: false
vaultRequestTimeout: 10s
allowedVaultAddrs: []
spcTlsDir: ""
maxInFlightPerNamespace: 16
maxMountBytes: 8388608
leaseCacheBytes: 33554432
{{- end -}}

{{/* The provider's arguments, as a YAML list. */}}
{{- define "vsp.args" -}}
{{- $serve := .Values.serve -}}
{{- $defaults := include "vsp.serveDefaults" . | fromYaml -}}
- serve
- --endpoint={{ $serve.endpoint }}
- --health-addr={{ $serve.healthAddr }}
- --log-format={{ $serve.logFormat }}
{{- range $key := keys $defaults | sortAlpha }}
{{- $value := index $serve $key }}
{{- if ne (toJson $value) (toJson (index $defaults $key)) }}
{{- $flag := regexReplaceAll "([A-Z])" $key "-${1}" | lower }}
{{- if eq $key "allowedPeerUids" }}
- --allowed-peer-uid={{ join "," $value }}
{{- else if eq $key "allowedVaultAddrs" }}
- --allowed-vault-addr={{ join "," $value }}
{{- else if kindIs "bool" $value }}
{{- if $value }}
- --{{ $flag }}
{{- end }}
{{- else if kindIs "float64" $value }}
- --{{ $flag }}={{ int64 $value }}
{{- else }}
- --{{ $flag }}={{ $value }}
{{- end }}
{{- end }}
{{- end }}
{{- $logLevel := ternary "debug" .Values.csi.logLevel (eq (toString .Values.csi.debug) "true") }}
{{- if ne $logLevel "info" }}
- --log-level={{ $logLevel }}
{{- end }}
{{- with .Values.csi.extraArgs }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The port of serve.healthAddr (host:port or [v6]:port). */}}
{{- define "vsp.healthPort" -}}
{{- $port := regexFind "[0-9]+$" .Values.serve.healthAddr -}}
{{- if or (not $port) (eq (int $port) 0) -}}
{{- fail "serve.healthAddr: the chart needs a fixed port (host:port, port not 0) for the probes" -}}
{{- end -}}
{{- int $port -}}
{{- end -}}
