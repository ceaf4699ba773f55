{{/*
Names. Kubernetes names are DNS labels: at most 63 characters, hence trunc 63.
*/}}
{{- define "fleetgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fleetgate.fullname" -}}
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

{{/* The name of one component's resources: <fullname>-<component>. */}}
{{- define "fleetgate.componentName" -}}
{{- printf "%s-%s" (include "fleetgate.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels never change after install (a Deployment's selector is immutable), so they hold
only the name, the instance and the component; custom labels go on the other labels only.
*/}}
{{- define "fleetgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fleetgate.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "fleetgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "fleetgate.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: fleetgate
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "fleetgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fleetgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "fleetgate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Secret names: the existing one, or the one this chart creates. */}}
{{- define "fleetgate.kafkaSecret" -}}
{{- if .Values.kafka.existingSecret }}{{ .Values.kafka.existingSecret }}{{ else if .Values.kafka.secretEnv }}{{ include "fleetgate.fullname" . }}-kafka{{ end }}
{{- end }}

{{- define "fleetgate.s3Secret" -}}
{{- if .Values.s3.existingSecret }}{{ .Values.s3.existingSecret }}{{ else if or .Values.s3.accessKey .Values.s3.secretKey }}{{ include "fleetgate.fullname" . }}-s3{{ end }}
{{- end }}

{{- define "fleetgate.connectorSecret" -}}
{{- if .Values.connector.existingSecret }}{{ .Values.connector.existingSecret }}{{ else if .Values.connector.secretEnv }}{{ include "fleetgate.fullname" . }}-connector{{ end }}
{{- end }}

{{- define "fleetgate.connectorConfigMap" -}}
{{- default (printf "%s-connector" (include "fleetgate.fullname" .)) .Values.connector.existingConfigMap }}
{{- end }}

{{/* Grace periods matching each service's drain. */}}
{{- define "fleetgate.grace" -}}
{{- $v := index .root.Values .component }}
{{- if $v.terminationGracePeriodSeconds }}{{ $v.terminationGracePeriodSeconds }}
{{- else if eq .component "ingestor" }}{{ add $v.preStopSeconds $v.drainSeconds $v.closeSeconds 10 }}
{{- else if eq .component "assembler" }}{{ add $v.drainSeconds 20 }}
{{- else }}{{ add $v.shutdownGraceSeconds 20 }}
{{- end }}
{{- end }}

{{/* Environment every service shares. */}}
{{- define "fleetgate.commonEnv" -}}
- name: FLEETGATE_KAFKA_BOOTSTRAP
  value: {{ .Values.kafka.bootstrap | quote }}
- name: FLEETGATE_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: FLEETGATE_LOG_JSON
  value: "true"
- name: FLEETGATE_METRICS_HOST
  value: "0.0.0.0"
- name: FLEETGATE_METRICS_PORT
  value: {{ .Values.metrics.port | quote }}
{{- range $name, $value := .Values.kafka.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}

{{- define "fleetgate.s3Env" -}}
- name: FLEETGATE_S3_ENDPOINT
  value: {{ .Values.s3.endpoint | quote }}
- name: FLEETGATE_S3_REGION
  value: {{ .Values.s3.region | quote }}
{{- with (include "fleetgate.s3Secret" .) }}
- name: FLEETGATE_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.s3.accessKeyKey }}
- name: FLEETGATE_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.s3.secretKeyKey }}
{{- end }}
{{- end }}

{{/* Default topology spread: over nodes and zones, best effort. */}}
{{- define "fleetgate.topologySpread" -}}
{{- $v := index .root.Values .component }}
{{- if $v.topologySpreadConstraints }}
{{- toYaml $v.topologySpreadConstraints }}
{{- else }}
{{- range list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
- maxSkew: 1
  topologyKey: {{ . }}
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "fleetgate.selectorLabels" $ | nindent 6 }}
{{- end }}
{{- end }}
{{- end }}
