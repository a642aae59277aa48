{{/* Names, labels, images and the shared environment of every vlarena object. */}}

{{- define "vlarena.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's base name; every object name starts with it. */}}
{{- define "vlarena.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The name of one component's objects: (dict "ctx" $ "component" "gateway"). */}}
{{- define "vlarena.componentName" -}}
{{- printf "%s-%s" (include "vlarena.fullname" .ctx) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vlarena.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vlarena.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vlarena.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "vlarena.labels" -}}
helm.sh/chart: {{ include "vlarena.chart" . }}
{{ include "vlarena.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vlarena
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "gateway"). */}}
{{- define "vlarena.componentSelectorLabels" -}}
{{ include "vlarena.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "vlarena.componentLabels" -}}
{{ include "vlarena.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* An image reference from (dict "ctx" $ "image" .Values.gateway.image "suffix" ""). */}}
{{- define "vlarena.image" -}}
{{- $registry := .ctx.Values.global.imageRegistry | default .image.registry -}}
{{- $tag := printf "%s%s" (.image.tag | default .ctx.Chart.AppVersion) (.suffix | default "") -}}
{{- $ref := ternary (printf "%s/%s" $registry .image.repository) .image.repository (ne $registry "") -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $ref .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $ref $tag -}}
{{- end -}}
{{- end -}}

{{- define "vlarena.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "vlarena.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "vlarena.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "vlarena.workerServiceAccountName" -}}
{{- if .Values.worker.serviceAccount.create -}}
{{- default (include "vlarena.componentName" (dict "ctx" . "component" "worker")) .Values.worker.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.worker.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the gateway's API keys file. */}}
{{- define "vlarena.apiKeysSecretName" -}}
{{- .Values.auth.existingSecret | default (include "vlarena.componentName" (dict "ctx" . "component" "api-keys")) -}}
{{- end -}}

{{- define "vlarena.artifactsClaimName" -}}
{{- .Values.artifacts.persistence.existingClaim | default (include "vlarena.componentName" (dict "ctx" . "component" "artifacts")) -}}
{{- end -}}

{{- define "vlarena.redisHost" -}}
{{- include "vlarena.componentName" (dict "ctx" . "component" "redis") -}}
{{- end -}}

{{/* VLARENA_REDIS_URL: the chart's Redis, an external URL, or a key of an existing Secret. */}}
{{- define "vlarena.redisUrlEnv" -}}
- name: VLARENA_REDIS_URL
{{- if .Values.redis.enabled }}
  value: {{ printf "redis://%s:%d/0" (include "vlarena.redisHost" .) (int .Values.redis.port) | quote }}
{{- else if .Values.externalRedis.existingSecret }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalRedis.existingSecret }}
      key: {{ .Values.externalRedis.existingSecretKey }}
{{- else if .Values.externalRedis.url }}
  value: {{ .Values.externalRedis.url | quote }}
{{- else }}
{{- fail "redis.enabled is false: set externalRedis.url or externalRedis.existingSecret" }}
{{- end }}
{{- end -}}

{{/* The environment every vlarena process reads (settings.py), then the user's extras. */}}
{{- define "vlarena.commonEnv" -}}
{{ include "vlarena.redisUrlEnv" . }}
- name: VLARENA_KEY_PREFIX
  value: {{ .Values.config.keyPrefix | quote }}
- name: VLARENA_ARTIFACT_DIR
  value: {{ .Values.artifacts.mountPath | quote }}
- name: VLARENA_LEASE_SECONDS
  value: {{ .Values.config.leaseSeconds | quote }}
- name: VLARENA_HEARTBEAT_SECONDS
  value: {{ .Values.config.heartbeatSeconds | quote }}
- name: VLARENA_RETRY_BACKOFF_SECONDS
  value: {{ .Values.config.retryBackoffSeconds | quote }}
- name: VLARENA_POISON_JOB_LIMIT
  value: {{ .Values.config.poisonJobLimit | int64 | quote }}
- name: VLARENA_STALL_TIMEOUT_SECONDS
  value: {{ .Values.config.stallTimeoutSeconds | quote }}
- name: VLARENA_JOB_RETENTION_SECONDS
  value: {{ .Values.config.jobRetentionSeconds | int64 | quote }}
- name: VLARENA_INT8_WEIGHTS
  value: {{ .Values.config.int8Weights | quote }}
- name: VLARENA_DATA_ROOTS
  value: {{ include "vlarena.dataRoots" . | quote }}
- name: VLARENA_MANIFEST_MAX_BYTES
  value: {{ .Values.data.manifestMaxBytes | int64 | quote }}
- name: VLARENA_ALLOW_IMAGE_URLS
  value: {{ .Values.data.imageUrls.enabled | quote }}
- name: VLARENA_IMAGE_URL_MAX_BYTES
  value: {{ .Values.data.imageUrls.maxBytes | int64 | quote }}
- name: VLARENA_IMAGE_URL_TIMEOUT_SECONDS
  value: {{ .Values.data.imageUrls.timeoutSeconds | quote }}
{{- with .Values.config.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* VLARENA_DATA_ROOTS: the mount paths of the data volumes, as a JSON list. */}}
{{- define "vlarena.dataRoots" -}}
{{- $paths := list -}}
{{- range .Values.data.volumes }}{{ $paths = append $paths .mountPath }}{{ end -}}
{{- toJson $paths -}}
{{- end -}}

{{/* The data volumes' mounts (read-only) and volumes, for the gateway and the workers. */}}
{{- define "vlarena.dataVolumeMounts" -}}
{{- range .Values.data.volumes }}
- name: data-{{ .name }}
  mountPath: {{ .mountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{- define "vlarena.dataVolumes" -}}
{{- range .Values.data.volumes }}
- name: data-{{ .name }}
  persistentVolumeClaim:
    claimName: {{ .claimName }}
    readOnly: true
{{- end }}
{{- end -}}

{{/* The artifact store volume (a PVC, or an emptyDir when persistence is off). */}}
{{- define "vlarena.artifactsVolume" -}}
- name: artifacts
{{- if .Values.artifacts.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "vlarena.artifactsClaimName" . }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end -}}

{{/* Pod-level scheduling: (dict "ctx" $ "values" .Values.gateway "gpu" false). */}}
{{- define "vlarena.scheduling" -}}
{{- $nodeSelector := .values.nodeSelector | default dict -}}
{{- $tolerations := .values.tolerations | default list -}}
{{- if .gpu -}}
{{- $nodeSelector = merge (deepCopy $nodeSelector) .ctx.Values.gpuNodePool.nodeSelector -}}
{{- $tolerations = concat .ctx.Values.gpuNodePool.tolerations $tolerations -}}
{{- end -}}
{{- with $nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/* Whether the Prometheus operator's API is there and ServiceMonitors are wanted. */}}
{{- define "vlarena.serviceMonitors" -}}
{{- if and .Values.monitoring.serviceMonitor.enabled (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") -}}
true
{{- end -}}
{{- end -}}
