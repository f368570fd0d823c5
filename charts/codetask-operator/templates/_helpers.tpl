{{- define "codetask.name" -}}codetask-operator{{- end -}}

{{- define "codetask.fullname" -}}
{{- if contains "codetask-operator" .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-codetask-operator" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{/* Labels of every object, without the component. */}}
{{- define "codetask.commonLabels" -}}
app.kubernetes.io/name: {{ include "codetask.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "codetask.labels" -}}
{{ include "codetask.commonLabels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "codetask.selector" -}}
app.kubernetes.io/name: {{ include "codetask.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "codetask.redisLabels" -}}
{{ include "codetask.commonLabels" . }}
app.kubernetes.io/component: redis
{{- end -}}

{{- define "codetask.redisSelector" -}}
app.kubernetes.io/name: {{ include "codetask.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end -}}

{{/* The in-chart Redis Service's name, and the prefix of the variables Kubernetes injects for it. */}}
{{- define "codetask.redisName" -}}{{ include "codetask.fullname" . | trunc 57 | trimSuffix "-" }}-redis{{- end -}}
{{- define "codetask.redisEnv" -}}{{ include "codetask.redisName" . | upper | replace "-" "_" }}{{- end -}}
