{{/*
Scale-out pieces: external PostgreSQL and Redis named by parts (password from a Secret), the
bundled official Qdrant chart (dependency `qdrant`, condition qdrant.enabled), and which
Deployments an autoscaler owns. Kept apart from _helpers.tpl so the cluster wiring reads in one place.
*/}}

{{/* "true" when the catalog is an external database: config.catalogUrl, externalPostgresql, or an existing Secret (which holds ZHIKU_CATALOG_URL). */}}
{{- define "zhiku.externalCatalog" -}}
{{- if or .Values.config.catalogUrl .Values.externalPostgresql.host .Values.secrets.existingSecret }}true{{ end }}
{{- end }}

{{/* "true" when Celery's broker is Redis: config.redisUrl or externalRedis. */}}
{{- define "zhiku.externalBroker" -}}
{{- if or .Values.config.redisUrl .Values.externalRedis.host }}true{{ end }}
{{- end }}

{{/*
EnvVars of the pods that use the catalog and the broker (ingest, worker, gateway) for
externalPostgresql / externalRedis: the password from its Secret first, then the URL that
embeds it through Kubernetes' $(VAR) expansion, so the password never enters a ConfigMap or
the chart's Secret. Renders nothing when neither is set.
*/}}
{{- define "zhiku.externalEnv" -}}
{{- with .Values.externalPostgresql }}
{{- if .host }}
{{- $query := list }}
{{- range $key, $value := .params }}
{{- $query = append $query (printf "%s=%s" (urlquery $key) (urlquery (toString $value))) }}
{{- end }}
- name: ZHIKU_EXTERNAL_POSTGRESQL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .passwordKey }}
- name: ZHIKU_CATALOG_URL
  value: {{ printf "postgresql+psycopg://%s:$(ZHIKU_EXTERNAL_POSTGRESQL_PASSWORD)@%s:%d/%s%s" (urlquery .user) .host (int .port) (urlquery .database) (ternary "" (printf "?%s" (join "&" $query)) (empty $query)) | quote }}
{{- end }}
{{- end }}
{{- with .Values.externalRedis }}
{{- if .host }}
{{- $auth := "" }}
{{- if .existingSecret }}
{{- $auth = printf "%s:$(ZHIKU_EXTERNAL_REDIS_PASSWORD)@" (urlquery .username) }}
- name: ZHIKU_EXTERNAL_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .passwordKey }}
{{- end }}
- name: ZHIKU_REDIS_URL
  value: {{ printf "%s://%s%s:%d/%d" (ternary "rediss" "redis" .tls) $auth .host (int .port) (int .database) | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* The bundled Qdrant chart's resource name, computed as its qdrant.fullname helper does. */}}
{{- define "zhiku.qdrantFullname" -}}
{{- $q := .Values.qdrant }}
{{- if $q.fullnameOverride }}
{{- $q.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default "qdrant" $q.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Qdrant URL retrieve uses: retrieve.qdrant.url, else the bundled chart's Service (REST port). */}}
{{- define "zhiku.qdrantUrl" -}}
{{- if .Values.retrieve.qdrant.url }}
{{- .Values.retrieve.qdrant.url }}
{{- else if .Values.qdrant.enabled }}
{{- printf "http://%s:6333" (include "zhiku.qdrantFullname" .) }}
{{- end }}
{{- end }}

{{/*
ZHIKU_RETRIEVE_QDRANT_* collection settings from retrieve.qdrant, as name: value YAML. Unset
values (null or "") are left out so the retrieve service keeps its own defaults.
*/}}
{{- define "zhiku.qdrantSettings" -}}
{{- $q := .Values.retrieve.qdrant }}
{{- $names := dict "shardNumber" "SHARD_NUMBER" "replicationFactor" "REPLICATION_FACTOR" "writeConsistencyFactor" "WRITE_CONSISTENCY_FACTOR" "onDiskVectors" "ON_DISK_VECTORS" "onDiskPayload" "ON_DISK_PAYLOAD" "quantization" "QUANTIZATION" "layout" "LAYOUT" }}
{{- range $key, $suffix := $names }}
{{- $value := get $q $key }}
{{- if not (or (kindIs "invalid" $value) (eq (toString $value) "")) }}
ZHIKU_RETRIEVE_QDRANT_{{ $suffix }}: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* "true" when an autoscaler (HPA, or KEDA for the worker) sets the component's replicas, so its Deployment leaves them out. Args: root, component. */}}
{{- define "zhiku.autoscaled" -}}
{{- $v := .root.Values }}
{{- if and (eq .component "worker") $v.keda.enabled }}true
{{- else if and $v.autoscaling.enabled (hasKey $v.autoscaling .component) (not (and (eq .component "retrieve") (eq $v.retrieve.backend "edge"))) }}true
{{- end }}
{{- end }}

{{/* Checks of the cluster values that fail the render with a clear message. */}}
{{- define "zhiku.validateCluster" -}}
{{- $v := .Values }}
{{- $q := $v.retrieve.qdrant }}
{{- if and $v.config.catalogUrl $v.externalPostgresql.host }}
{{- fail "set either config.catalogUrl or externalPostgresql.host, not both" }}
{{- end }}
{{- if and $v.externalPostgresql.host (not $v.externalPostgresql.existingSecret) }}
{{- fail "externalPostgresql.host needs externalPostgresql.existingSecret (the Secret holding the password)" }}
{{- end }}
{{- if and $v.config.redisUrl $v.externalRedis.host }}
{{- fail "set either config.redisUrl or externalRedis.host, not both" }}
{{- end }}
{{- if $v.keda.enabled }}
{{- $queue := get $v.config.extraEnv "ZHIKU_INGEST_QUEUE" }}
{{- range $v.worker.extraEnv }}{{ if eq .name "ZHIKU_INGEST_QUEUE" }}{{ $queue = .value }}{{ end }}{{ end }}
{{- if and $queue (ne (toString $queue) $v.keda.queueName) }}
{{- fail (printf "keda.queueName (%s) must be the queue the workers consume, ZHIKU_INGEST_QUEUE (%s)" $v.keda.queueName $queue) }}
{{- end }}
{{- end }}
{{- if $v.qdrant.enabled }}
{{- if ne $v.retrieve.backend "qdrant" }}
{{- fail "qdrant.enabled installs a Qdrant cluster for retrieve: set retrieve.backend=qdrant" }}
{{- end }}
{{- if and (gt (int $v.qdrant.replicaCount) 1) (not $v.qdrant.config.cluster.enabled) }}
{{- fail "qdrant.replicaCount > 1 needs qdrant.config.cluster.enabled=true (distributed mode)" }}
{{- end }}
{{- if and $q.replicationFactor (gt (int $q.replicationFactor) (int $v.qdrant.replicaCount)) }}
{{- fail (printf "retrieve.qdrant.replicationFactor (%v) exceeds the Qdrant nodes (qdrant.replicaCount=%v): each copy of a shard needs a node of its own" $q.replicationFactor $v.qdrant.replicaCount) }}
{{- end }}
{{- end }}
{{- /* As the retrieve service checks it: an unset replication factor is Qdrant's default, 1. */}}
{{- $replication := $q.replicationFactor | default 1 }}
{{- if and $q.writeConsistencyFactor (gt (int $q.writeConsistencyFactor) (int $replication)) }}
{{- fail (printf "retrieve.qdrant.writeConsistencyFactor (%v) exceeds retrieve.qdrant.replicationFactor (%v): a write could never be acknowledged" $q.writeConsistencyFactor $replication) }}
{{- end }}
{{- end }}
