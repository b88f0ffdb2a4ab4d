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
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
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
{{/*
Port of the command API (`config.api.listen`); empty when the API is off.
*/}}
{{- define "espm-bridge.apiPort" -}}
{{- with .Values.config.api }}{{ with .listen }}{{ regexFind "[0-9]+$" . }}{{ end }}{{ end }}
{{- end }}

{{- define "espm-bridge.metricsPort" -}}
{{- $listen := "0.0.0.0:9464" }}
{{- with .Values.config.metrics }}{{ with .listen }}{{ $listen = . }}{{ end }}{{ end }}
{{- regexFind "[0-9]+$" $listen | default "9464" }}
{{- end }}

{{/*
Seconds of a duration in the config's format ("30s", "1m 30s", "500ms"); fails on anything else.
*/}}
{{- define "espm-bridge.seconds" -}}
{{- $total := 0.0 }}
{{- $text := toString . }}
{{- if not (regexMatch "^\\s*([0-9]+\\s*[a-z]+\\s*)+$" $text) }}
{{- fail (printf "cannot read the duration %q: use a number and a unit, e.g. 30s" $text) }}
{{- end }}
{{- range regexFindAll "[0-9]+\\s*[a-z]+" $text -1 }}
{{- $n := regexFind "^[0-9]+" . | float64 }}
{{- $unit := regexFind "[a-z]+$" . }}
{{- if eq $unit "ms" }}{{ $total = addf $total (divf $n 1000.0) }}
{{- else if has $unit (list "s" "sec" "secs" "second" "seconds") }}{{ $total = addf $total $n }}
{{- else if has $unit (list "m" "min" "mins" "minute" "minutes") }}{{ $total = addf $total (mulf $n 60.0) }}
{{- else if has $unit (list "h" "hr" "hrs" "hour" "hours") }}{{ $total = addf $total (mulf $n 3600.0) }}
{{- else }}{{ fail (printf "cannot read the duration %q: unit %q is not ms, s, m or h" $text $unit) }}
{{- end }}
{{- end }}
{{- ceil $total | int }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the bridge's shutdown grace plus the longest PM request timeout
(a clear=true in flight is waited for and journalled) plus a margin. An explicit shorter value
fails the render instead of letting Kubernetes kill the pod mid-clear.
*/}}
{{- define "espm-bridge.terminationGracePeriodSeconds" -}}
{{- $timeout := 30 }}
{{- range .Values.config.accounts }}
{{- with .request_timeout }}{{ $timeout = max $timeout (include "espm-bridge.seconds" . | int) }}{{ end }}
{{- end }}
{{- $needed := add (int .Values.shutdownGraceSeconds) $timeout 10 }}
{{- $set := int .Values.terminationGracePeriodSeconds }}
{{- if eq $set 0 }}
{{- $needed }}
{{- else if lt $set $needed }}
{{- fail (printf "terminationGracePeriodSeconds %d is too short: shutdownGraceSeconds (%d) + the longest accounts[].request_timeout (%ds) + 10s = %ds; set it to at least %d or to 0 to derive it" $set (int .Values.shutdownGraceSeconds) $timeout $needed $needed) }}
{{- else }}
{{- $set }}
{{- end }}
{{- end }}

{{/*
Every secret file the configuration names (`*_file` values and `*_files` maps), one per line.
*/}}
{{- define "espm-bridge.secretFiles" -}}
{{- range $k, $v := . }}
{{- if kindIs "map" $v }}
{{- if hasSuffix "_files" $k }}
{{- range $v }}{{ . }}{{ "\n" }}{{ end }}
{{- else }}
{{- include "espm-bridge.secretFiles" $v }}
{{- end }}
{{- else if kindIs "slice" $v }}
{{- range $v }}{{ if kindIs "map" . }}{{ include "espm-bridge.secretFiles" . }}{{ end }}{{ end }}
{{- else if and (hasSuffix "_file" $k) (kindIs "string" $v) }}
{{- $v }}{{ "\n" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Fails the render when the configuration names a file under /run/secrets/espm-bridge that the
mounted Secret does not provide. With existingSecret the keys are checked when the Secret can be
looked up (a real install); offline renders trust it.
*/}}
{{- define "espm-bridge.checkSecretFiles" -}}
{{- $dir := "/run/secrets/espm-bridge/" }}
{{- $keys := list }}
{{- $known := true }}
{{- if .Values.existingSecret }}
{{- $found := lookup "v1" "Secret" .Release.Namespace .Values.existingSecret }}
{{- if $found }}{{ $keys = keys ($found.data | default dict) }}{{ else }}{{ $known = false }}{{ end }}
{{- else }}
{{- $keys = keys .Values.secrets }}
{{- end }}
{{- if $known }}
{{- range splitList "\n" (include "espm-bridge.secretFiles" .Values.config) }}
{{- if hasPrefix $dir . }}
{{- $key := trimPrefix $dir . }}
{{- if not (has $key $keys) }}
{{- if $.Values.existingSecret }}
{{- fail (printf "config names the secret file %s, but the Secret %q (existingSecret) has no key %q" . $.Values.existingSecret $key) }}
{{- else }}
{{- fail (printf "config names the secret file %s, but neither `secrets` nor `existingSecret` provides it: add `secrets.%s` or set `existingSecret` to a Secret with the key %q" . $key $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Default probes (values.yaml: an empty map means these).
*/}}
{{- define "espm-bridge.livenessProbe" -}}
httpGet:
  path: /healthz
  port: metrics
periodSeconds: 10
timeoutSeconds: 3
failureThreshold: 6
{{- end }}

{{- define "espm-bridge.readinessProbe" -}}
httpGet:
  path: /readyz
  port: metrics
periodSeconds: 10
timeoutSeconds: 3
failureThreshold: 3
{{- end }}

{{- define "espm-bridge.startupProbe" -}}
httpGet:
  path: /healthz
  port: metrics
periodSeconds: 5
timeoutSeconds: 3
failureThreshold: 60
{{- end }}
