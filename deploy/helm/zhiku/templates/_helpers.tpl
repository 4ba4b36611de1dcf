{{/*
Shared names, labels, images, probes and pod pieces. Component templates call these with
(dict "root" $ "component" "<name>") so every resource is named and labelled the same way.
*/}}

{{/* Chart name, overridable. */}}
{{- define "zhiku.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name prefix: <release>-<chart> unless the release name already contains the chart name. */}}
{{- define "zhiku.fullname" -}}
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

{{/* Name of one component's resources: <fullname>-<component>. Args: root, component. */}}
{{- define "zhiku.componentName" -}}
{{- printf "%s-%s" (include "zhiku.fullname" .root | trunc 50 | trimSuffix "-") .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "zhiku.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: only chart-controlled, immutable values. User-editable labels
(commonLabels, podLabels) never enter a selector, since Deployment selectors cannot change
and `helm upgrade` would fail. Args: root, component (optional).
*/}}
{{- define "zhiku.selectorLabels" -}}
app.kubernetes.io/name: {{ include "zhiku.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{/* Labels of every resource: selector labels plus chart metadata and commonLabels. Args: root, component. */}}
{{- define "zhiku.labels" -}}
helm.sh/chart: {{ include "zhiku.chart" .root }}
{{ include "zhiku.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: zhiku
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Image reference. Args: root, image ({repository, tag}). */}}
{{- define "zhiku.image" -}}
{{- $tag := .image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- $repo := .image.repository }}
{{- with .root.Values.image.registry }}
{{- $repo = printf "%s/%s" (trimSuffix "/" .) $repo }}
{{- end }}
{{- printf "%s:%s" $repo (toString $tag) }}
{{- end }}

{{- define "zhiku.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "zhiku.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "zhiku.configMapName" -}}
{{- printf "%s-config" (include "zhiku.fullname" .) }}
{{- end }}

{{- define "zhiku.secretName" -}}
{{- default (printf "%s-secrets" (include "zhiku.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{- define "zhiku.dataClaimName" -}}
{{- default (printf "%s-data" (include "zhiku.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{/* host:port that clients dial for a gRPC component. Args: root, component. */}}
{{- define "zhiku.grpcAddr" -}}
{{- $values := index .root.Values .component }}
{{- printf "%s:%d" (include "zhiku.componentName" .) (int $values.grpcPort) }}
{{- end }}

{{/*
One probe: a handler (grpc, httpGet or exec map) merged with timing values.
Args: handler (dict), timing (dict).
*/}}
{{- define "zhiku.probe" -}}
{{- toYaml (merge (dict) .handler .timing) }}
{{- end }}

{{/* startup, liveness and readiness probes on the standard gRPC health service. Args: port, probes. */}}
{{- define "zhiku.grpcProbes" -}}
{{- $handler := dict "grpc" (dict "port" (int .port) "service" "") -}}
startupProbe:
  {{- include "zhiku.probe" (dict "handler" $handler "timing" .probes.startup) | nindent 2 }}
livenessProbe:
  {{- include "zhiku.probe" (dict "handler" $handler "timing" .probes.liveness) | nindent 2 }}
readinessProbe:
  {{- include "zhiku.probe" (dict "handler" $handler "timing" .probes.readiness) | nindent 2 }}
{{- end }}

{{/* Pod annotations: config checksums (roll pods on change), Prometheus scrape hints, user's. Args: root, values, metricsPort. */}}
{{- define "zhiku.podAnnotations" -}}
checksum/config: {{ include (print .root.Template.BasePath "/configmap.yaml") .root | sha256sum }}
checksum/secret: {{ include (print .root.Template.BasePath "/secret.yaml") .root | sha256sum }}
{{- if .root.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .metricsPort | int | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with .values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod-level fields every component shares. Args: root. */}}
{{- define "zhiku.podCommon" -}}
serviceAccountName: {{ include "zhiku.serviceAccountName" .root }}
automountServiceAccountToken: {{ .root.Values.serviceAccount.automountServiceAccountToken }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Affinity for pods sharing the data volume with ingest (the worker): with a ReadWriteOnce claim
they must run on ingest's node. Used only when the component sets no affinity of its own. Args: root, values.
*/}}
{{- define "zhiku.dataAffinity" -}}
{{- if .values.affinity }}
{{- toYaml .values.affinity }}
{{- else if and .root.Values.persistence.enabled (not (has "ReadWriteMany" .root.Values.persistence.accessModes)) -}}
podAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "zhiku.selectorLabels" (dict "root" .root "component" "ingest") | nindent 10 }}
{{- end }}
{{- end }}

{{/* Container fields every component shares: image, env sources, security context. Args: root, image. */}}
{{- define "zhiku.containerCommon" -}}
image: {{ include "zhiku.image" (dict "root" .root "image" .image) }}
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
envFrom:
  - configMapRef:
      name: {{ include "zhiku.configMapName" .root }}
  - secretRef:
      name: {{ include "zhiku.secretName" .root }}
{{- with .root.Values.containerSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* gRPC listener settings of a service process. Args: component, values. */}}
{{- define "zhiku.grpcEnv" -}}
{{- $prefix := printf "ZHIKU_%s" (upper .component) -}}
- name: {{ $prefix }}_GRPC_HOST
  value: "0.0.0.0"
- name: {{ $prefix }}_GRPC_PORT
  value: {{ .values.grpcPort | int | quote }}
- name: {{ $prefix }}_METRICS_PORT
  value: {{ .values.metricsPort | int | quote }}
{{- end }}

{{/* Values checks that fail the render with a clear message. */}}
{{- define "zhiku.validate" -}}
{{- $v := .Values }}
{{- if and (eq $v.retrieve.backend "edge") (gt (int $v.retrieve.replicaCount) 1) }}
{{- fail "retrieve.backend=edge opens its shards from one process: set retrieve.replicaCount=1 or use retrieve.backend=qdrant" }}
{{- end }}
{{- if and (eq $v.retrieve.backend "qdrant") (not (include "zhiku.qdrantUrl" .)) }}
{{- fail "retrieve.backend=qdrant needs retrieve.qdrant.url (or qdrant.enabled to install a Qdrant cluster with the chart)" }}
{{- end }}
{{- include "zhiku.validateCluster" . }}
{{- include "zhiku.validateIdentity" . }}
{{- if and (eq $v.embed.backend "tei") (not $v.embed.tei.url) }}
{{- fail "embed.backend=tei needs embed.tei.url" }}
{{- end }}
{{- if and (eq $v.generate.backend "openai") (not (and $v.generate.openai.baseUrl $v.generate.model)) }}
{{- fail "generate.backend=openai needs generate.openai.baseUrl and generate.model (the upstream model name)" }}
{{- end }}
{{- if and (eq $v.generate.backend "vllm") (not $v.generate.gpu.enabled) }}
{{- fail "generate.backend=vllm runs vLLM in the pod: set generate.gpu.enabled=true (see values-gpu.yaml)" }}
{{- end }}
{{- $components := dict }}
{{- range $entry := $v.generate.modelDeployments }}
{{- $where := printf "generate.modelDeployments[%s]" ($entry.name | default "" | quote) }}
{{- if not (regexMatch "^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$" ($entry.name | default "")) }}
{{- fail (printf "%s: name is the model name requests use: 1-128 letters, digits and . _ : / @ + -" $where) }}
{{- end }}
{{- if or (hasKey ($v.generate.models | default dict) $entry.name) (eq $entry.name "default") (hasPrefix "kb:" $entry.name) }}
{{- fail (printf "%s: the name is taken (by generate.models, or reserved: default, kb:...)" $where) }}
{{- end }}
{{- $component := include "zhiku.modelComponent" $entry }}
{{- if or (hasKey $components $component) (eq $component "generate-") }}
{{- fail (printf "%s: its Deployment would be named %s, like another's: rename one" $where $component) }}
{{- end }}
{{- $_ := set $components $component true }}
{{- $mv := include "zhiku.modelValues" (dict "root" $ "entry" $entry) | fromYaml }}
{{- $backend := get ($entry.settings | default dict) "backend" | default $mv.backend }}
{{- if and (eq $backend "vllm") (not $mv.gpu.enabled) }}
{{- fail (printf "%s: backend vllm runs vLLM in the pod: set values.gpu.enabled=true" $where) }}
{{- end }}
{{- if and (eq $backend "openai") (not (or $mv.model (get ($entry.settings | default dict) "openai_model"))) }}
{{- fail (printf "%s: backend openai needs values.model (the upstream model name)" $where) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Service of a gRPC component: grpc and metrics ports. Args: root, component, values (default: the component's). */}}
{{- define "zhiku.grpcService" -}}
{{- $v := .values | default (index .root.Values .component) -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "zhiku.componentName" . }}
  labels:
    {{- include "zhiku.labels" . | nindent 4 }}
  {{- with $v.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $v.service.type }}
  selector:
    {{- include "zhiku.selectorLabels" . | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $v.grpcPort }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
    - name: metrics
      port: {{ $v.metricsPort }}
      targetPort: metrics
      protocol: TCP
{{- end }}

{{/*
Deployment of a gRPC service process (embed, retrieve, generate, ingest): gRPC health probes,
metrics port, config from the ConfigMap and Secret, writable /tmp and /data.
Args: root, component, and optionally:
  values         the component's values (default: .Values.<component>)
  service        the service it runs, for its ZHIKU_<SERVICE>_ settings (default: component)
  image          image values (default: the component's image)
  resources      resources map (default: the component's resources)
  strategy       Deployment strategy (default: the component's strategy)
  nodeSelector, tolerations, affinity   scheduling (default: the component's)
  runtimeClassName
  env            extra EnvVars (list)
  volumeMounts   extra mounts (list); /tmp always, /data from dataVolume
  volumes        extra volumes (list)
  dataVolume     the volume source mounted at /data (default: emptyDir)
*/}}
{{- define "zhiku.grpcDeployment" -}}
{{- $root := .root }}
{{- $component := .component }}
{{- $v := .values | default (index $root.Values $component) }}
{{- $service := .service | default $component }}
{{- $ctx := dict "root" $root "component" $component }}
{{- $strategy := .strategy | default $v.strategy }}
{{- $nodeSelector := .nodeSelector | default $v.nodeSelector }}
{{- $tolerations := .tolerations | default $v.tolerations }}
{{- $affinity := .affinity | default $v.affinity }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "zhiku.componentName" $ctx }}
  labels:
    {{- include "zhiku.labels" $ctx | nindent 4 }}
spec:
  {{- if not (include "zhiku.autoscaled" $ctx) }}
  replicas: {{ $v.replicaCount }}
  {{- end }}
  {{- with $strategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "zhiku.selectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "zhiku.labels" $ctx | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        {{- include "zhiku.podAnnotations" (dict "root" $root "values" $v "metricsPort" $v.metricsPort) | nindent 8 }}
    spec:
      {{- include "zhiku.podCommon" $ctx | nindent 6 }}
      {{- with .runtimeClassName }}
      runtimeClassName: {{ . }}
      {{- end }}
      {{- with $nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ $component }}
          {{- include "zhiku.containerCommon" (dict "root" $root "image" (.image | default $v.image)) | nindent 10 }}
          env:
            {{- include "zhiku.grpcEnv" (dict "component" $service "values" $v) | nindent 12 }}
            {{- with .env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: grpc
              containerPort: {{ $v.grpcPort }}
              protocol: TCP
            - name: metrics
              containerPort: {{ $v.metricsPort }}
              protocol: TCP
          {{- include "zhiku.grpcProbes" (dict "port" $v.grpcPort "probes" $v.probes) | nindent 10 }}
          resources:
            {{- toYaml (.resources | default $v.resources) | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            - name: data
              mountPath: /data
            {{- with .volumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir: {}
        - name: data
          {{- toYaml (.dataVolume | default (dict "emptyDir" (dict))) | nindent 10 }}
        {{- with .volumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
{{- end }}

{{/* Volume source of the shared data volume (ingest and worker). */}}
{{- define "zhiku.dataVolumeSource" -}}
{{- if .Values.persistence.enabled -}}
persistentVolumeClaim:
  claimName: {{ include "zhiku.dataClaimName" . }}
{{- else -}}
emptyDir: {}
{{- end }}
{{- end }}
