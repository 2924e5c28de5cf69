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

{{- define "etcd-repopulator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "etcd-repopulator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "etcd-repopulator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "etcd-repopulator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "etcd-repopulator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "etcd-repopulator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "etcd-repopulator.authSecretName" -}}
{{- default (printf "%s-auth" (include "etcd-repopulator.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{/* config.toml: the values' config, with namespace forced to targetNamespace (where the Role is),
and, unless config sets them, the auth mode, the files of the mounted auth Secret and the files of
the mounted SSH and etcd TLS Secrets filled in. */}}
{{- define "etcd-repopulator.configToml" -}}
{{- $mounted := dict
      "auth" (dict "mode" .Values.auth.mode "tokens_file" "/etc/etcd-repopulator/auth/tokens")
      "webhooks" (dict "hmac_key_file" "/etc/etcd-repopulator/auth/webhook-hmac-key") }}
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
