{{- define "codetask.name" -}}codetask-operator{{- end -}}

{{- define "codetask.fullname" -}}
{{- if contains "codetask-operator" .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-codetask-operator" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "codetask.labels" -}}
app.kubernetes.io/name: {{ include "codetask.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "codetask.selector" -}}
app.kubernetes.io/name: {{ include "codetask.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
