{{/* Chart name, possibly overridden. */}}
{{- define "etcd-repopulator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the resources. */}}
{{- define "etcd-repopulator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The recommended labels but the component, which each object adds. */}}
{{- define "etcd-repopulator.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "etcd-repopulator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: {{ include "etcd-repopulator.name" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The labels of the service's objects (the pod among them). */}}
{{- define "etcd-repopulator.labels" -}}
{{ include "etcd-repopulator.commonLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{/* The Deployment's selector (immutable: a new label here would break `helm upgrade`). */}}
{{- define "etcd-repopulator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "etcd-repopulator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The Service's selector: the service's pods, not the `helm test` pod, which has the
Deployment's selector labels too but another component. */}}
{{- define "etcd-repopulator.serverSelectorLabels" -}}
{{ include "etcd-repopulator.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{/* The ServiceAccount the pod runs as. Without one, the RoleBinding would grant the Role
(deleting pods, creating and deleting Jobs, StatefulSets and EtcdClusters) to the namespace's
`default` ServiceAccount, i.e. to every pod that uses it: the render fails instead. */}}
{{- define "etcd-repopulator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "etcd-repopulator.fullname" .) .Values.serviceAccount.name }}
{{- else if .Values.serviceAccount.name }}
{{- .Values.serviceAccount.name }}
{{- else }}
{{- fail "serviceAccount.create is false but serviceAccount.name is empty: name the existing ServiceAccount the service runs as (the chart does not fall back to the namespace's \"default\" ServiceAccount: its Role would then be granted to every pod that uses that account)" }}
{{- end }}
{{- end }}

{{- define "etcd-repopulator.authSecretName" -}}
{{- default (printf "%s-auth" (include "etcd-repopulator.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{/* How the API authenticates: config.auth.mode if the values' config sets it, else auth.mode. */}}
{{- define "etcd-repopulator.authMode" -}}
{{- dig "auth" "mode" .Values.auth.mode (.Values.config | default dict) }}
{{- end }}

{{/* The files of the auth Secret the service reads and the Secret's keys they come from, as
`file: key` lines: `tokens` in token mode, `webhook-hmac-key` when there is a webhook key. Only
these are mounted, so that a Secret needs no key its modes do not use. */}}
{{- define "etcd-repopulator.authItems" -}}
{{- $items := dict }}
{{- $existing := .Values.auth.existingSecret }}
{{- if eq (include "etcd-repopulator.authMode" .) "token" }}
{{- $_ := set $items "tokens" (ternary .Values.auth.tokensItem "tokens" (ne $existing "")) }}
{{- end }}
{{- if $existing }}
{{- with .Values.auth.webhookHmacKeyItem }}
{{- $_ := set $items "webhook-hmac-key" . }}
{{- end }}
{{- else if .Values.auth.webhookHmacKey }}
{{- $_ := set $items "webhook-hmac-key" "webhook-hmac-key" }}
{{- end }}
{{- if $items }}
{{- toYaml $items }}
{{- end }}
{{- end }}

{{/* A bearer token for the `helm test` pod among the chart's own auth.tokens (the first read
token if there is one: the test only reads; else the first), or nothing. */}}
{{- define "etcd-repopulator.testToken" -}}
{{- $first := "" }}
{{- $read := "" }}
{{- if and (not .Values.auth.existingSecret) (eq (include "etcd-repopulator.authMode" .) "token") }}
{{- range .Values.auth.tokens }}
{{- $fields := splitn ":" 3 . }}
{{- $token := trim $fields._2 }}
{{- if not $first }}
{{- $first = $token }}
{{- end }}
{{- if and (not $read) (eq (trim $fields._1) "read") }}
{{- $read = $token }}
{{- end }}
{{- end }}
{{- end }}
{{- default $first $read }}
{{- end }}

{{/* The data of the auth Secret the chart creates, when auth.existingSecret is empty: only the
keys the configured modes read, and the `helm test` pod's token. */}}
{{- define "etcd-repopulator.authSecretData" -}}
{{- $data := dict }}
{{- $items := include "etcd-repopulator.authItems" . | fromYaml }}
{{- if hasKey $items "tokens" }}
{{- $tokens := "" }}
{{- range .Values.auth.tokens }}
{{- $tokens = printf "%s%s\n" $tokens . }}
{{- end }}
{{- $_ := set $data "tokens" $tokens }}
{{- end }}
{{- if hasKey $items "webhook-hmac-key" }}
{{- $_ := set $data "webhook-hmac-key" .Values.auth.webhookHmacKey }}
{{- end }}
{{- if .Values.tests.enabled }}
{{- with include "etcd-repopulator.testToken" . }}
{{- $_ := set $data "test-token" . }}
{{- end }}
{{- end }}
{{- if $data }}
{{- toYaml $data }}
{{- end }}
{{- end }}

{{/* The pod and container security settings, shared by the service's pod and the test pod. */}}
{{- define "etcd-repopulator.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
# Makes the volumes (the database's) writable by the non-root user.
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "etcd-repopulator.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "etcd-repopulator.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The Service's URL inside the cluster. */}}
{{- define "etcd-repopulator.url" -}}
http://{{ include "etcd-repopulator.fullname" . }}.{{ .Release.Namespace }}.svc:{{ .Values.service.port }}
{{- end }}

{{/* config.toml: the values' config, with namespace forced to targetNamespace (where the Role is),
and, unless config sets them, the auth mode, the files of the mounted auth Secret and the files of
the mounted SSH, etcd TLS and S3 Secrets, the snapshotter mount and the drills' scratch directory
filled in. */}}
{{- define "etcd-repopulator.configToml" -}}
{{- $items := include "etcd-repopulator.authItems" . | fromYaml }}
{{- $auth := dict "mode" .Values.auth.mode }}
{{- if hasKey $items "tokens" }}
{{- $_ := set $auth "tokens_file" "/etc/etcd-repopulator/auth/tokens" }}
{{- end }}
{{- $mounted := dict "auth" $auth }}
{{- if hasKey $items "webhook-hmac-key" }}
{{- $_ := set $mounted "webhooks" (dict "hmac_key_file" "/etc/etcd-repopulator/auth/webhook-hmac-key") }}
{{- end }}
{{- if .Values.ssh.existingSecret }}
{{- $ssh := dict "identity_file" (printf "/etc/etcd-repopulator/ssh/%s" .Values.ssh.keyItem) }}
{{- if .Values.ssh.knownHostsItem }}
{{- $_ := set $ssh "known_hosts_file" "/etc/etcd-repopulator/ssh/known_hosts" }}
{{- end }}
{{- $_ := set $mounted "ssh" $ssh }}
{{- end }}
{{- with .Values.etcdTls }}
{{- if .existingSecret }}
{{- $etcd := dict "ca_file" "/etc/etcd-repopulator/etcd/ca.crt" }}
{{- if and .certItem .keyItem }}
{{- $_ := set $etcd "cert_file" "/etc/etcd-repopulator/etcd/client.crt" }}
{{- $_ := set $etcd "key_file" "/etc/etcd-repopulator/etcd/client.key" }}
{{- end }}
{{- $_ := set $mounted "etcd" $etcd }}
{{- end }}
{{- end }}
{{- $recovery := dict "snapshots_dir" (ternary "/snapshots" "" .Values.backups.snapshotter.enabled) }}
{{- if .Values.backups.s3.existingSecret }}
{{- $_ := set $recovery "s3_credentials_dir" "/etc/etcd-repopulator/s3" }}
{{- end }}
{{- $_ := set $mounted "recovery" $recovery }}
{{- $_ := set $mounted "drills" (dict "scratch_dir" "/drills") }}
{{- $config := merge (dict "namespace" .Values.targetNamespace) (deepCopy (.Values.config | default dict)) $mounted }}
{{- include "etcd-repopulator.intsFromFloats" $config }}
{{- toToml $config }}
{{- end }}

{{/* Helm reads values files through JSON, so every number reaches the templates as a float64,
and toToml writes a float64 with a fraction even when it is whole (`fanout = 16.0`), which the
service's integer keys (ssh.fanout, ssh.port, snapshots.retain, csm.retry.max_attempts) refuse.
This turns the whole floats of a table back into integers, in place, through nested tables and
lists. It renders nothing. */}}
{{- define "etcd-repopulator.intsFromFloats" -}}
{{- $table := . }}
{{- range $key, $value := $table }}
{{- if kindIs "map" $value }}
{{- include "etcd-repopulator.intsFromFloats" $value }}
{{- else if kindIs "slice" $value }}
{{- $items := list }}
{{- range $value }}
{{- $box := dict "item" . }}
{{- include "etcd-repopulator.intsFromFloats" $box }}
{{- $items = append $items $box.item }}
{{- end }}
{{- $_ := set $table $key $items }}
{{- else if kindIs "float64" $value }}
{{- if eq $value (floor $value) }}
{{- $_ := set $table $key (int64 $value) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The labels of the monitoring objects (ServiceMonitor, PrometheusRule, dashboard), with the
extra labels `labels` the watching side selects them by (kube-prometheus-stack's Prometheus, its
Grafana's dashboard sidecar). */}}
{{- define "etcd-repopulator.monitoringLabels" -}}
{{ include "etcd-repopulator.commonLabels" .root }}
app.kubernetes.io/component: monitoring
{{- with .labels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* A duration of the values (`2h`, `30m`, `7d`: one number, one unit of s, m, h, d or w; the
schema checks the form) in seconds, for PromQL, whose number literals take no units. */}}
{{- define "etcd-repopulator.seconds" -}}
{{- $units := dict "s" 1 "m" 60 "h" 3600 "d" 86400 "w" 604800 }}
{{- $number := regexFind "^[0-9]+" . }}
{{- $unit := trimPrefix $number . }}
{{- if or (not $number) (not (hasKey $units $unit)) }}
{{- fail (printf "%q is not a duration such as 2h, 30m or 7d" .) }}
{{- end }}
{{- mul (atoi $number) (get $units $unit) }}
{{- end }}
