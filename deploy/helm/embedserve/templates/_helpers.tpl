{{/*
Names and labels follow `helm create`, so the usual overrides work.
*/}}
{{- define "embedserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "embedserve.fullname" -}}
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

{{- define "embedserve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "embedserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "embedserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "embedserve.labels" -}}
helm.sh/chart: {{ include "embedserve.chart" . }}
{{ include "embedserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "embedserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "embedserve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The CPU and CUDA images share a repository and differ by tag suffix (deploy/docker/).
*/}}
{{- define "embedserve.image" -}}
{{- $flavor := ternary "cuda" "cpu" .Values.gpu.enabled }}
{{- $tag := .Values.image.tag | default (printf "%s-%s" .Chart.AppVersion $flavor) }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "embedserve.testImage" -}}
{{- if .Values.tests.image.repository }}
{{- printf "%s:%s" .Values.tests.image.repository (.Values.tests.image.tag | default .Chart.AppVersion) }}
{{- else }}
{{- include "embedserve.image" . }}
{{- end }}
{{- end }}

{{- define "embedserve.apiKeySecretName" -}}
{{- .Values.apiKey.existingSecret | default (printf "%s-api-key" (include "embedserve.fullname" .)) }}
{{- end }}

{{- define "embedserve.apiKeyEnabled" -}}
{{- if or .Values.apiKey.existingSecret .Values.apiKey.value }}true{{ end }}
{{- end }}

{{- define "embedserve.modelClaimName" -}}
{{- .Values.modelStorage.pvc.existingClaim | default (printf "%s-models" (include "embedserve.fullname" .)) }}
{{- end }}

{{/*
Fixed mount points of the writable scratch volumes: the root filesystem is read-only.
*/}}
{{- define "embedserve.tmpDir" -}}/tmp{{- end }}
{{- define "embedserve.cacheDir" -}}/cache{{- end }}

{{/*
ONNX exports are costly (minutes for large models): keep them next to the model when that
volume is writable, so a PVC or hostPath carries them across restarts.
*/}}
{{- define "embedserve.exportCacheDir" -}}
{{- if .Values.modelStorage.readOnly }}
{{- printf "%s/embedserve" (include "embedserve.cacheDir" .) }}
{{- else }}
{{- printf "%s/embedserve" (trimSuffix "/" .Values.modelStorage.mountPath) }}
{{- end }}
{{- end }}

{{/*
The launcher gives the router graceful-timeout + 5 s to drain, then the tokenizers and
backends WORKER_STOP_TIMEOUT_S (10 s); the preStop sleep runs before SIGTERM. 5 s on top
so the kubelet's SIGKILL never lands inside the launcher's own shutdown.
*/}}
{{- define "embedserve.terminationGracePeriodSeconds" -}}
{{- add (int .Values.preStopSleepSeconds) (ceil .Values.server.gracefulTimeout | int) 5 10 5 }}
{{- end }}

{{/*
The launcher's command line. Every server setting is a flag here (flags win over env), so
environment variables Kubernetes injects on its own — HOSTNAME is the pod name — cannot
change the server's behaviour. Values are strings: numbers from values would otherwise
render as floats (2e+06).
*/}}
{{- define "embedserve.args" -}}
{{- $s := .Values.server }}
{{- if and $s.defaultPrompt $s.defaultPromptName }}
{{- fail "server.defaultPrompt and server.defaultPromptName are exclusive" }}
{{- end }}
{{- $metricsPort := .Values.metrics.port | int }}
{{- if and $metricsPort (has $metricsPort (list ($s.port | int) ($s.grpcPort | int))) }}
{{- fail "metrics.port must differ from server.port and server.grpcPort (0 turns it off)" }}
{{- end }}
{{- $args := list "--hostname" "0.0.0.0" "--port" ($s.port | int | toString) "--grpc-port" ($s.grpcPort | int | toString) }}
{{- /* Always given: the launcher's own default (9000) is a port the pod may not expose. */}}
{{- $args = concat $args (list "--prometheus-port" ($metricsPort | toString)) }}
{{- $args = concat $args (list "--uds-path" (printf "%s/embedserve" (include "embedserve.tmpDir" .))) }}
{{- $args = concat $args (list "--huggingface-hub-cache" (trimSuffix "/" .Values.modelStorage.mountPath)) }}
{{- if .Values.models }}
{{- if or $s.modelId $s.servedModelName }}
{{- fail "models and server.modelId / server.servedModelName are exclusive: name each model in models" }}
{{- end }}
{{- $args = concat $args (list "--models-config" (include "embedserve.modelsConfigPath" .)) }}
{{- end }}
{{- with $s.modelId }}{{ $args = concat $args (list "--model-id" .) }}{{ end }}
{{- with $s.revision }}{{ $args = concat $args (list "--revision" .) }}{{ end }}
{{- with $s.servedModelName }}{{ $args = concat $args (list "--served-model-name" .) }}{{ end }}
{{- $args = concat $args (list "--backend" $s.backend) }}
{{- $args = concat $args (list (printf "--trust-remote-code=%t" $s.trustRemoteCode)) }}
{{- with $s.dtype }}{{ $args = concat $args (list "--dtype" .) }}{{ end }}
{{- with $s.pooling }}{{ $args = concat $args (list "--pooling" .) }}{{ end }}
{{- $args = concat $args (list "--max-concurrent-requests" ($s.maxConcurrentRequests | int64 | toString)) }}
{{- $args = concat $args (list "--max-batch-tokens" ($s.maxBatchTokens | int64 | toString)) }}
{{- if $s.maxBatchRequests }}{{ $args = concat $args (list "--max-batch-requests" ($s.maxBatchRequests | int64 | toString)) }}{{ end }}
{{- $args = concat $args (list "--max-client-batch-size" ($s.maxClientBatchSize | int64 | toString)) }}
{{- if $s.tokenizationWorkers }}{{ $args = concat $args (list "--tokenization-workers" ($s.tokenizationWorkers | int64 | toString)) }}{{ end }}
{{- if $s.routerWorkers }}{{ $args = concat $args (list "--router-workers" ($s.routerWorkers | int64 | toString)) }}{{ end }}
{{- with $s.queuePolicy }}{{ $args = concat $args (list "--queue-policy" .) }}{{ end }}
{{- if not (kindIs "invalid" $s.interactiveMaxTokens) }}{{ $args = concat $args (list "--interactive-max-tokens" ($s.interactiveMaxTokens | int64 | toString)) }}{{ end }}
{{- $args = concat $args (list (printf "--auto-truncate=%t" $s.autoTruncate)) }}
{{- with $s.defaultPromptName }}{{ $args = concat $args (list "--default-prompt-name" .) }}{{ end }}
{{- with $s.defaultPrompt }}{{ $args = concat $args (list "--default-prompt" .) }}{{ end }}
{{- $args = concat $args (list "--payload-limit" ($s.payloadLimit | int64 | toString)) }}
{{- $args = concat $args (list "--graceful-timeout" ($s.gracefulTimeout | toString)) }}
{{- $args = concat $args (list "--body-read-timeout" ($s.bodyReadTimeout | toString)) }}
{{- $args = concat $args (list "--default-request-timeout-ms" ($s.defaultRequestTimeoutMs | int64 | toString)) }}
{{- if $s.jsonOutput }}{{ $args = append $args "--json-output" }}{{ end }}
{{- with $s.corsAllowOrigin }}{{ $args = concat $args (list "--cors-allow-origin") . }}{{ end }}
{{- $args = concat $args $s.extraArgs }}
{{- toYaml $args }}
{{- end }}

{{/*
Environment shared by the server, the prefetch step: caches and secrets.
*/}}
{{- define "embedserve.cacheEnv" -}}
- name: HUGGINGFACE_HUB_CACHE
  value: {{ trimSuffix "/" .Values.modelStorage.mountPath | quote }}
- name: HF_HUB_CACHE
  value: {{ trimSuffix "/" .Values.modelStorage.mountPath | quote }}
- name: HF_HOME
  value: {{ printf "%s/huggingface" (include "embedserve.cacheDir" .) | quote }}
- name: EMBEDSERVE_CACHE_DIR
  value: {{ include "embedserve.exportCacheDir" . | quote }}
{{- /* Libraries that write under ~ (torch, triton) get the writable scratch volume. */}}
- name: HOME
  value: {{ include "embedserve.cacheDir" . | quote }}
- name: XDG_CACHE_HOME
  value: {{ include "embedserve.cacheDir" . | quote }}
- name: HF_HUB_DISABLE_TELEMETRY
  value: "1"
{{- if .Values.hfToken.existingSecret }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.hfToken.existingSecret }}
      key: {{ .Values.hfToken.existingSecretKey }}
{{- end }}
{{- end }}

{{- define "embedserve.scratchVolumeMounts" -}}
- name: tmp
  mountPath: {{ include "embedserve.tmpDir" . }}
- name: cache
  mountPath: {{ include "embedserve.cacheDir" . }}
{{- end }}

{{/*
The server pod's securityContext: podSecurityContext, plus, when a port of the server is
below 1024 (server.port 80, as TEI's images), the sysctl that lets the image's user bind
it without any capability: net.ipv4.ip_unprivileged_port_start=0 in the pod's own network
namespace (a safe sysctl since Kubernetes 1.22, allowed by the baseline and restricted Pod
Security Standards). A value for it in podSecurityContext.sysctls is kept if it allows the
ports.
*/}}
{{- define "embedserve.podSecurityContext" -}}
{{- $context := deepCopy .Values.podSecurityContext }}
{{- $lowest := int .Values.server.port }}
{{- if and .Values.server.grpcPort (lt (int .Values.server.grpcPort) $lowest) }}
{{- $lowest = int .Values.server.grpcPort }}
{{- end }}
{{- if lt $lowest 1024 }}
{{- $sysctl := "net.ipv4.ip_unprivileged_port_start" }}
{{- $sysctls := default (list) $context.sysctls }}
{{- $named := false }}
{{- range $sysctls }}
{{- if eq .name $sysctl }}
{{- $named = true }}
{{- if gt (int .value) $lowest }}
{{- fail (printf "podSecurityContext.sysctls sets %s=%v, which keeps port %d from the server's user" $sysctl .value $lowest) }}
{{- end }}
{{- end }}
{{- end }}
{{- if not $named }}
{{- $sysctls = append $sysctls (dict "name" $sysctl "value" "0") }}
{{- end }}
{{- $_ := set $context "sysctls" $sysctls }}
{{- end }}
{{- toYaml $context }}
{{- end }}

{{/*
The --models-config file (values `models`), its ConfigMap and where the server reads it.
*/}}
{{- define "embedserve.modelsFile" -}}
{{- toYaml (dict "models" .Values.models) }}
{{- end }}

{{- define "embedserve.modelsConfigName" -}}
{{- printf "%s-models" (include "embedserve.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "embedserve.modelsConfigDir" -}}/etc/embedserve{{- end }}

{{- define "embedserve.modelsConfigPath" -}}{{ include "embedserve.modelsConfigDir" . }}/models.yaml{{- end }}
