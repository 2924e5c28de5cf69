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
and the auth mode and the files of the mounted auth Secret filled in unless config sets them. */}}
{{- define "etcd-repopulator.configToml" -}}
{{- $mounted := dict
      "auth" (dict "mode" .Values.auth.mode "tokens_file" "/etc/etcd-repopulator/auth/tokens")
      "webhooks" (dict "hmac_key_file" "/etc/etcd-repopulator/auth/webhook-hmac-key") }}
{{- $config := merge (dict "namespace" .Values.targetNamespace) (deepCopy .Values.config) $mounted }}
{{- toToml $config }}
{{- end }}
