{{/* Names, labels and the values that several templates derive. */}}

{{- define "minkms.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's resource name: "<release>-minkms", or the release name if it contains "minkms". */}}
{{- define "minkms.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "minkms.headless" -}}{{ include "minkms.fullname" . }}-hl{{- end -}}
{{- define "minkms.etcd" -}}{{ include "minkms.fullname" . }}-etcd{{- end -}}
{{- define "minkms.etcdHeadless" -}}{{ include "minkms.fullname" . }}-etcd-hl{{- end -}}

{{- define "minkms.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{ include "minkms.selectorLabels" . }}
{{- end -}}

{{- define "minkms.selectorLabels" -}}
app.kubernetes.io/name: {{ include "minkms.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: kms
{{- end -}}

{{- define "minkms.etcdSelectorLabels" -}}
app.kubernetes.io/name: {{ include "minkms.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: etcd
{{- end -}}

{{- define "minkms.etcdLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Values.etcd.image.tag | quote }}
{{ include "minkms.etcdSelectorLabels" . }}
{{- end -}}

{{- define "minkms.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{- define "minkms.hsmSecret" -}}
{{- default (printf "%s-hsm" (include "minkms.fullname" .)) .Values.hsm.existingSecret -}}
{{- end -}}

{{- define "minkms.tlsSecret" -}}
{{- default (printf "%s-tls" (include "minkms.fullname" .)) .Values.tls.existingSecret -}}
{{- end -}}

{{- define "minkms.configSecret" -}}
{{- default (printf "%s-config" (include "minkms.fullname" .)) .Values.existingConfigSecret -}}
{{- end -}}

{{/* True ("true") when the chart runs its own etcd. */}}
{{- define "minkms.ownEtcd" -}}
{{- if not .Values.store.etcd.endpoints -}}true{{- end -}}
{{- end -}}

{{/* The etcd client URLs: the given ones, or every member of the chart's etcd. */}}
{{- define "minkms.etcdEndpoints" -}}
{{- if .Values.store.etcd.endpoints -}}
{{- toJson .Values.store.etcd.endpoints -}}
{{- else -}}
{{- $urls := list -}}
{{- range $i := until (int .Values.etcd.replicaCount) -}}
{{- $urls = append $urls (printf "http://%s-%d.%s.%s.svc.%s:2379" (include "minkms.etcd" $) $i (include "minkms.etcdHeadless" $) $.Release.Namespace $.Values.clusterDomain) -}}
{{- end -}}
{{- toJson $urls -}}
{{- end -}}
{{- end -}}

{{/* Checks that need more than the schema: refuse what cannot start. */}}
{{- define "minkms.validate" -}}
{{- if and (not .Values.hsm.soft) (not .Values.hsm.minkms.enabled) -}}
{{- fail "no HSM: keep hsm.soft (a soft HSM key from a Secret) or enable hsm.minkms (the KMS chain)" -}}
{{- end -}}
{{- if .Values.hsm.minkms.enabled -}}
{{- if or (not .Values.hsm.minkms.servers) (not .Values.hsm.minkms.enclave) (not .Values.hsm.minkms.key) -}}
{{- fail "hsm.minkms needs servers, enclave and key" -}}
{{- end -}}
{{- if and (not .Values.hsm.minkms.apiKey) (not .Values.existingConfigSecret) -}}
{{- fail "hsm.minkms.apiKey is required (or write the configuration yourself: existingConfigSecret)" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.tls.certManager.enabled (not .Values.tls.certManager.issuerRef.name) -}}
{{- fail "tls.certManager.issuerRef.name is required with tls.certManager.enabled" -}}
{{- end -}}
{{- if and .Values.tls.certManager.enabled .Values.tls.existingSecret -}}
{{- fail "give tls.existingSecret or tls.certManager, not both" -}}
{{- end -}}
{{- if and (include "minkms.ownEtcd" .) (eq (mod (int .Values.etcd.replicaCount) 2) 0) -}}
{{- fail "etcd.replicaCount must be odd (1, 3, 5): an even member count adds no fault tolerance" -}}
{{- end -}}
{{- if and .Values.store.etcd.username (not .Values.store.etcd.password) -}}
{{- fail "store.etcd.username needs store.etcd.password" -}}
{{- end -}}
{{- end -}}
