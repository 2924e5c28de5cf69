{{/* What NOTES.txt prints after an install or upgrade; a named template so that the tests can
render it (`helm template` skips NOTES.txt). */}}
{{- define "etcd-repopulator.notes" -}}
{{- $fullname := include "etcd-repopulator.fullname" . }}
{{- $mode := include "etcd-repopulator.authMode" . }}
{{- $items := include "etcd-repopulator.authItems" . | fromYaml -}}
etcd-repopulator {{ .Chart.AppVersion }} runs as {{ $fullname }} in namespace {{ .Release.Namespace }} and
repopulates the CSM services in namespace {{ .Values.targetNamespace }}.

Reach the API inside the cluster at {{ include "etcd-repopulator.url" . }}
{{- if eq .Values.service.type "NodePort" }}, or on every node at
the port of:
  kubectl -n {{ .Release.Namespace }} get service {{ $fullname }} -o jsonpath='{.spec.ports[0].nodePort}'
{{- else if eq .Values.service.type "LoadBalancer" }}, or at the address of:
  kubectl -n {{ .Release.Namespace }} get service {{ $fullname }} -o jsonpath='{.status.loadBalancer.ingress[0]}'
{{- end }}
From your machine:
  kubectl -n {{ .Release.Namespace }} port-forward service/{{ $fullname }} 8080:{{ .Values.service.port }}
  etcd-repopulator services list --url http://localhost:8080{{ if ne $mode "none" }} --token <token>{{ end }}
{{ if eq $mode "token" }}
{{- if and (not .Values.auth.existingSecret) (not .Values.auth.tokens) }}
NO API TOKENS ARE CONFIGURED: every API call is refused (401) until there are some. Set
auth.tokens (`name:role:token`, role `read`, `write` or `recover`) or auth.existingSecret and run
`helm upgrade`. Only /healthz, /readyz, /metrics and /openapi.json answer without a token.
{{- else if .Values.auth.existingSecret }}
Callers send one of the tokens of Secret {{ .Values.auth.existingSecret }} (key {{ .Values.auth.tokensItem }}) as
`Authorization: Bearer <token>` (the client's --token).
{{- else }}
Callers send one of auth.tokens as `Authorization: Bearer <token>` (the client's --token).
{{- end }}
{{- else if eq $mode "jwt" }}
Callers send a JWT from the issuer of config.auth.jwt as `Authorization: Bearer <token>`
(the client's --token).
{{- else }}
WARNING: auth.mode is "{{ $mode }}": anyone who reaches the Service can start runs and read the
history. Use `token` or `jwt` in a real cluster.
{{- end }}
{{- if hasKey $items "webhook-hmac-key" }}
Signed webhooks (POST /webhooks/generic) are enabled.
{{- else }}
POST /webhooks/generic is disabled (no webhook HMAC key).
{{- end }}
{{- if .Values.tests.enabled }}

`helm test {{ .Release.Name }} -n {{ .Release.Namespace }}` runs `etcd-repopulator services list` against the
Service
{{- if or .Values.tests.existingSecret (include "etcd-repopulator.testToken" .) (eq $mode "none") }}.
{{- else }} without a token, so it fails (401) until it has one:
{{- if and (eq $mode "token") (not .Values.auth.existingSecret) }} auth.tokens, or{{ end }} a Secret named by tests.existingSecret.
{{- end }}
{{- end }}
{{- end }}
