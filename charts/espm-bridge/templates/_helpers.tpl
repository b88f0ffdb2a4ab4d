{{/*
Chart name, truncated to the 63 characters Kubernetes allows in names.
*/}}
{{- define "espm-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: release-chart unless the release name already contains the chart name.
*/}}
{{- define "espm-bridge.fullname" -}}
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

{{- define "espm-bridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "espm-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "espm-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "espm-bridge.labels" -}}
helm.sh/chart: {{ include "espm-bridge.chart" . }}
{{ include "espm-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "espm-bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "espm-bridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the Secret mounted at /run/secrets/espm-bridge; empty when there is none.
*/}}
{{- define "espm-bridge.secretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else if .Values.secrets }}
{{- include "espm-bridge.fullname" . }}
{{- end }}
{{- end }}

{{/*
Container port: the port of config.metrics.listen (default 0.0.0.0:9464).
*/}}
{{- define "espm-bridge.metricsPort" -}}
{{- $listen := "0.0.0.0:9464" }}
{{- with .Values.config.metrics }}{{ with .listen }}{{ $listen = . }}{{ end }}{{ end }}
{{- regexFind "[0-9]+$" $listen | default "9464" }}
{{- end }}
