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
{{- define "codetask.redisSecret" -}}{{ include "codetask.redisName" . }}-auth{{- end -}}
{{- define "codetask.redisEnv" -}}{{ include "codetask.redisName" . | upper | replace "-" "_" }}{{- end -}}

{{/* Egress rules of task pods: DNS, the in-chart Redis, then the rules given ((list $ rules)). */}}
{{- define "codetask.taskEgress" -}}
{{- $root := index . 0 -}}
{{- $rules := list -}}
{{- if $root.Values.networkPolicy.allowDNS -}}
{{- $rules = append $rules (dict "ports" (list (dict "port" 53 "protocol" "UDP") (dict "port" 53 "protocol" "TCP"))) -}}
{{- end -}}
{{- if $root.Values.redis.enabled -}}
{{- $redis := include "codetask.redisSelector" $root | fromYaml -}}
{{- $to := list (dict "namespaceSelector" (dict) "podSelector" (dict "matchLabels" $redis)) -}}
{{- $rules = append $rules (dict "to" $to "ports" (list (dict "port" 6379 "protocol" "TCP"))) -}}
{{- end -}}
{{- $rules = concat $rules (index . 1 | default list) -}}
{{- if $rules }}{{ toYaml $rules }}{{ else }}[]{{ end -}}
{{- end -}}

{{/* The operator's CODETASK_TASK_EGRESS: code and agent pods' egress rules, as JSON. */}}
{{- define "codetask.taskEgressJson" -}}
{{- $code := include "codetask.taskEgress" (list . .Values.networkPolicy.egress) | fromYamlArray -}}
{{- $agent := include "codetask.taskEgress" (list . .Values.networkPolicy.agentEgress) | fromYamlArray -}}
{{- dict "code" $code "agent" $agent | toJson -}}
{{- end -}}
