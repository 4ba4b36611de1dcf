{{/*
The generate service's settings, from generate's values or a model Deployment's merged ones,
as a YAML map of environment variable -> string. The ConfigMap holds the main Deployment's;
each model Deployment sets its own as env, over the ConfigMap's. Args: the generate values.
*/}}
{{- define "zhiku.generateSettings" -}}
ZHIKU_GENERATE_BACKEND: {{ .backend | quote }}
{{- with .model }}
ZHIKU_GENERATE_VLLM_MODEL: {{ . | quote }}
ZHIKU_GENERATE_OPENAI_MODEL: {{ . | quote }}
{{- end }}
{{- with .openai.baseUrl }}
ZHIKU_GENERATE_OPENAI_BASE_URL: {{ . | quote }}
{{- end }}
ZHIKU_GENERATE_VLLM_TENSOR_PARALLEL_SIZE: {{ .vllm.tensorParallelSize | int | quote }}
ZHIKU_GENERATE_VLLM_GPU_MEMORY_UTILIZATION: {{ .vllm.gpuMemoryUtilization | toString | quote }}
{{- with .vllm.maxModelLen }}
ZHIKU_GENERATE_VLLM_MAX_MODEL_LEN: {{ . | int | quote }}
{{- end }}
ZHIKU_GENERATE_VLLM_DTYPE: {{ .vllm.dtype | quote }}
{{- with .vllm.quantization }}
ZHIKU_GENERATE_VLLM_QUANTIZATION: {{ . | quote }}
{{- end }}
ZHIKU_GENERATE_VLLM_MAX_NUM_SEQS: {{ .vllm.maxNumSeqs | int | quote }}
ZHIKU_GENERATE_VLLM_ENABLE_PREFIX_CACHING: {{ .vllm.enablePrefixCaching | toString | quote }}
{{- with .vllm.toolCallParser }}
ZHIKU_GENERATE_VLLM_TOOL_CALL_PARSER: {{ . | quote }}
{{- end }}
{{- end }}

{{/* The resources' part of a model Deployment's name: its model name, DNS-safe. Args: entry. */}}
{{- define "zhiku.modelSlug" -}}
{{- regexReplaceAll "[^a-z0-9]+" (lower .name) "-" | trimAll "-" | trunc 24 | trimSuffix "-" }}
{{- end }}

{{/* Component of a model Deployment: generate-<slug>. Args: entry. */}}
{{- define "zhiku.modelComponent" -}}
{{- printf "generate-%s" (include "zhiku.modelSlug" .) }}
{{- end }}

{{/* A model Deployment's values: generate's, with the entry's `values` over them. Args: root, entry. */}}
{{- define "zhiku.modelValues" -}}
{{- toYaml (mergeOverwrite (omit (deepCopy .root.Values.generate) "modelDeployments" "models") (deepCopy (.entry.values | default dict))) }}
{{- end }}

{{/* Secret key of a model Deployment's own upstream API key. Args: entry. */}}
{{- define "zhiku.modelApiKeyName" -}}
{{- printf "ZHIKU_GENERATE_OPENAI_API_KEY_%s" (include "zhiku.modelSlug" . | upper | replace "-" "_") }}
{{- end }}

{{/* The models served by Deployments of their own, as a YAML list of names. Args: root. */}}
{{- define "zhiku.modelNames" -}}
{{- $names := list }}
{{- range .Values.generate.modelDeployments }}{{ $names = append $names .name }}{{ end }}
{{- toYaml $names }}
{{- end }}

{{/* model -> host:port of its Deployment's Service, as JSON (ZHIKU_GATEWAY_GENERATE_MODEL_ADDRS). Args: root. */}}
{{- define "zhiku.modelAddrs" -}}
{{- $root := . }}
{{- $addrs := dict }}
{{- range $entry := .Values.generate.modelDeployments }}
{{- $v := include "zhiku.modelValues" (dict "root" $root "entry" $entry) | fromYaml }}
{{- $name := include "zhiku.componentName" (dict "root" $root "component" (include "zhiku.modelComponent" $entry)) }}
{{- $_ := set $addrs $entry.name (printf "%s:%d" $name (int $v.grpcPort)) }}
{{- end }}
{{- toJson $addrs }}
{{- end }}

{{/*
A model Deployment's environment: its model's settings (from its merged values, then its
`settings`, named as ZHIKU_GENERATE_ variables without the prefix), its name as the served
model, and none of the main Deployment's named models. Args: root, entry, values.
*/}}
{{- define "zhiku.modelEnv" -}}
{{- $env := dict }}
{{- range $name, $value := include "zhiku.generateSettings" .values | fromYaml }}
{{- $_ := set $env $name $value }}
{{- end }}
{{- range $key, $value := .entry.settings }}
{{- $_ := set $env (printf "ZHIKU_GENERATE_%s" (upper $key)) (ternary (toJson $value) (toString $value) (or (kindIs "map" $value) (kindIs "slice" $value))) }}
{{- end }}
{{- $_ := set $env "ZHIKU_GENERATE_SERVED_MODEL_NAME" .entry.name }}
{{- $_ := set $env "ZHIKU_GENERATE_MODELS" "" }}
{{- $_ := set $env "ZHIKU_GENERATE_REWRITE_MODEL" "" }}
{{- range $name := keys $env | sortAlpha }}
- name: {{ $name }}
  value: {{ get $env $name | quote }}
{{- end }}
{{- with dig "openai" "apiKey" "" (.entry.values | default dict) }}
- name: ZHIKU_GENERATE_OPENAI_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "zhiku.secretName" $.root }}
      key: {{ include "zhiku.modelApiKeyName" $.entry }}
{{- end }}
{{- end }}


{{/*
One generate Deployment (the main one, or a model's): GPUs, model cache and /dev/shm from its
values. Args: root, component, values, env (extra EnvVars, optional).
*/}}
{{- define "zhiku.generateDeployment" -}}
{{- $v := .values }}
{{- $tp := int $v.vllm.tensorParallelSize }}
{{- $args := dict "root" .root "component" .component "service" "generate" "values" $v "env" (.env | default list) }}
{{- $volumes := list }}
{{- $mounts := list }}
{{- if or $v.gpu.enabled $v.modelCache.persistent }}
{{- $cache := dict "emptyDir" (dict) }}
{{- if $v.modelCache.persistent }}
{{- $claim := $v.modelCache.existingClaim | default (printf "%s-cache" (include "zhiku.componentName" $args)) }}
{{- $cache = dict "persistentVolumeClaim" (dict "claimName" $claim) }}
{{- end }}
{{- $volumes = append $volumes (merge (dict "name" "cache") $cache) }}
{{- $mounts = append $mounts (dict "name" "cache" "mountPath" "/cache") }}
{{- end }}
{{- if gt $tp 1 }}
{{- $volumes = append $volumes (dict "name" "dshm" "emptyDir" (dict "medium" "Memory" "sizeLimit" $v.vllm.shmSize)) }}
{{- $mounts = append $mounts (dict "name" "dshm" "mountPath" "/dev/shm") }}
{{- end }}
{{- $_ := set $args "volumes" $volumes }}
{{- $_ := set $args "volumeMounts" $mounts }}
{{- if $v.gpu.enabled }}
{{- $resources := deepCopy $v.resources }}
{{- $limits := get $resources "limits" | default dict }}
{{- $_ := set $limits $v.gpu.resourceName $tp }}
{{- $_ := set $resources "limits" $limits }}
{{- with get $resources "requests" }}
{{- if hasKey . $v.gpu.resourceName }}
{{- /* Extended resources must request exactly their limit. */}}
{{- $_ := set . $v.gpu.resourceName $tp }}
{{- end }}
{{- end }}
{{- $_ := set $args "resources" $resources }}
{{- $_ := set $args "image" $v.gpu.image }}
{{- $_ := set $args "nodeSelector" (merge (dict) $v.nodeSelector $v.gpu.nodeSelector) }}
{{- $_ := set $args "tolerations" (concat $v.tolerations $v.gpu.tolerations) }}
{{- $_ := set $args "runtimeClassName" $v.gpu.runtimeClassName }}
{{- if not $v.strategy }}
{{- /* Roll one pod at a time without asking for spare GPUs. */}}
{{- $_ := set $args "strategy" (dict "type" "RollingUpdate" "rollingUpdate" (dict "maxSurge" 0 "maxUnavailable" 1)) }}
{{- end }}
{{- end }}
{{- include "zhiku.grpcDeployment" $args }}
{{- end }}
