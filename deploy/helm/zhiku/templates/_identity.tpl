{{/*
People, web sign-in and single sign-on (gateway.identity, gateway.oidc): which ZHIKU_GATEWAY_*
settings go into the ConfigMap, which secrets reach the gateway from a Secret, and the checks
that refuse values the gateway would reject or that break sign-in across replicas. Kept apart
from _helpers.tpl so the identity wiring reads in one place.
*/}}

{{/*
The OIDC callback URL: gateway.oidc.redirectUrl, else the first ingress host's
/v1/auth/oidc/callback (https when a TLS block names that host), else empty (the gateway
builds it from the address the browser used).
*/}}
{{- define "zhiku.oidcRedirectUrl" -}}
{{- $o := .Values.gateway.oidc }}
{{- $ingress := .Values.gateway.ingress }}
{{- if $o.redirectUrl }}
{{- $o.redirectUrl }}
{{- else if and $ingress.enabled $ingress.hosts }}
{{- $host := (first $ingress.hosts).host }}
{{- if $host }}
{{- $tls := false }}
{{- range $ingress.tls }}
{{- if has $host (.hosts | default list) }}{{ $tls = true }}{{ end }}
{{- end }}
{{- printf "%s://%s/v1/auth/oidc/callback" (ternary "https" "http" $tls) $host }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Non-secret identity settings as ConfigMap entries (NAME: "value" lines). Unset values (null,
"" or an empty list) are left out so the gateway keeps its own defaults; groupsClaim "" is
kept, as it means "no group sync". The OIDC settings render only with an issuer.
*/}}
{{- define "zhiku.identitySettings" -}}
{{- $i := .Values.gateway.identity }}
{{- $o := .Values.gateway.oidc }}
{{- with $i.adminEmail }}
ZHIKU_GATEWAY_ADMIN_EMAIL: {{ . | quote }}
{{- end }}
{{- if not (kindIs "invalid" $i.sessionCookieSecure) }}
ZHIKU_GATEWAY_SESSION_COOKIE_SECURE: {{ $i.sessionCookieSecure | toString | quote }}
{{- end }}
{{- if not (kindIs "invalid" $i.sessionTtlS) }}
ZHIKU_GATEWAY_SESSION_TTL_S: {{ $i.sessionTtlS | toString | quote }}
{{- end }}
{{- with $i.trustedProxies }}
ZHIKU_GATEWAY_TRUSTED_PROXIES: {{ join "," . | quote }}
{{- end }}
{{- if not (kindIs "invalid" $i.userRateLimitPerMinute) }}
ZHIKU_GATEWAY_USER_RATE_LIMIT_PER_MINUTE: {{ $i.userRateLimitPerMinute | int | toString | quote }}
{{- end }}
{{- if not (kindIs "invalid" $i.uploadsPerDay) }}
ZHIKU_GATEWAY_UPLOADS_PER_DAY: {{ $i.uploadsPerDay | int | toString | quote }}
{{- end }}
{{- if not (kindIs "invalid" $i.auditRetentionDays) }}
ZHIKU_GATEWAY_AUDIT_RETENTION_DAYS: {{ $i.auditRetentionDays | toString | quote }}
{{- end }}
{{- if $o.issuer }}
ZHIKU_GATEWAY_OIDC_ISSUER: {{ $o.issuer | quote }}
ZHIKU_GATEWAY_OIDC_CLIENT_ID: {{ $o.clientId | quote }}
{{- with $o.scopes }}
ZHIKU_GATEWAY_OIDC_SCOPES: {{ join "," . | quote }}
{{- end }}
{{- with include "zhiku.oidcRedirectUrl" . }}
ZHIKU_GATEWAY_OIDC_REDIRECT_URL: {{ . | quote }}
{{- end }}
{{- with $o.label }}
ZHIKU_GATEWAY_OIDC_LABEL: {{ . | quote }}
{{- end }}
{{- with $o.emailClaim }}
ZHIKU_GATEWAY_OIDC_EMAIL_CLAIM: {{ . | quote }}
{{- end }}
{{- with $o.nameClaim }}
ZHIKU_GATEWAY_OIDC_NAME_CLAIM: {{ . | quote }}
{{- end }}
{{- if not (kindIs "invalid" $o.groupsClaim) }}
ZHIKU_GATEWAY_OIDC_GROUPS_CLAIM: {{ $o.groupsClaim | quote }}
{{- end }}
{{- with $o.groupMap }}
ZHIKU_GATEWAY_OIDC_GROUP_MAP: {{ toJson . | quote }}
{{- end }}
{{- if not (kindIs "invalid" $o.autoCreateUsers) }}
ZHIKU_GATEWAY_OIDC_AUTO_CREATE_USERS: {{ $o.autoCreateUsers | toString | quote }}
{{- end }}
{{- with $o.emailDomains }}
ZHIKU_GATEWAY_OIDC_EMAIL_DOMAINS: {{ join "," . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The identity secrets the chart's own Secret holds (name: value YAML, values not yet encoded):
the plain values of gateway.identity and gateway.oidc. Existing Secrets reach the gateway
through zhiku.identityEnv instead.
*/}}
{{- define "zhiku.identitySecretData" -}}
{{- with .Values.gateway.identity.adminPassword }}
ZHIKU_GATEWAY_ADMIN_PASSWORD: {{ . | quote }}
{{- end }}
{{- with .Values.gateway.oidc.clientSecret }}
ZHIKU_GATEWAY_OIDC_CLIENT_SECRET: {{ . | quote }}
{{- end }}
{{- with .Values.gateway.oidc.stateSecret }}
ZHIKU_GATEWAY_OIDC_STATE_SECRET: {{ . | quote }}
{{- end }}
{{- end }}

{{/* EnvVars of the gateway reading identity secrets from existing Secrets (gateway only, unlike the shared Secret). */}}
{{- define "zhiku.identityEnv" -}}
{{- with .Values.gateway.identity }}
{{- if .existingSecret }}
- name: ZHIKU_GATEWAY_ADMIN_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .adminPasswordKey }}
{{- end }}
{{- end }}
{{- with .Values.gateway.oidc }}
{{- if .existingSecret }}
{{- if .clientSecretKey }}
- name: ZHIKU_GATEWAY_OIDC_CLIENT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .clientSecretKey }}
{{- end }}
{{- if .stateSecretKey }}
- name: ZHIKU_GATEWAY_OIDC_STATE_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .stateSecretKey }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* "true" when more than one gateway pod may serve traffic (replicaCount, or an HPA that may add pods). */}}
{{- define "zhiku.gatewayReplicated" -}}
{{- $v := .Values }}
{{- if gt (int $v.gateway.replicaCount) 1 }}true
{{- else if and (include "zhiku.autoscaled" (dict "root" . "component" "gateway")) (gt (int $v.autoscaling.gateway.maxReplicas) 1) }}true
{{- end }}
{{- end }}

{{/* Names of the variables set through extraEnv (config.extraEnv map, gateway.extraEnv list). */}}
{{- define "zhiku.gatewayExtraEnvNames" -}}
{{- $names := keys (.Values.config.extraEnv | default dict) }}
{{- range .Values.gateway.extraEnv }}{{ $names = append $names .name }}{{ end }}
{{- toYaml $names }}
{{- end }}

{{/*
Where every gateway replica gets the same key for the OIDC state cookie, as far as the chart can
tell: "values" (the chart's Secret or an existing Secret it names by key, or extraEnv), "secret"
(secrets.existingSecret, whose keys the chart cannot see), or empty: each pod draws its own.
*/}}
{{- define "zhiku.oidcStateKeySource" -}}
{{- $o := .Values.gateway.oidc }}
{{- $extra := include "zhiku.gatewayExtraEnvNames" . | fromYamlArray }}
{{- if or $o.clientSecret $o.stateSecret (and $o.existingSecret (or $o.clientSecretKey $o.stateSecretKey)) (has "ZHIKU_GATEWAY_OIDC_CLIENT_SECRET" $extra) (has "ZHIKU_GATEWAY_OIDC_STATE_SECRET" $extra) }}values
{{- else if .Values.secrets.existingSecret }}secret
{{- end }}
{{- end }}

{{/* Identity values checks that fail the render with a clear message. */}}
{{- define "zhiku.validateIdentity" -}}
{{- $i := .Values.gateway.identity }}
{{- $o := .Values.gateway.oidc }}
{{- if and $i.adminPassword $i.existingSecret }}
{{- fail "set either gateway.identity.adminPassword or gateway.identity.existingSecret, not both" }}
{{- end }}
{{- if and (or $i.adminPassword $i.existingSecret) (not $i.adminEmail) }}
{{- fail "gateway.identity.adminPassword (or existingSecret) needs gateway.identity.adminEmail: the password is the first admin's, and that email names them" }}
{{- end }}
{{- if and .Values.secrets.existingSecret (or $i.adminPassword $o.clientSecret $o.stateSecret) }}
{{- fail (printf "with secrets.existingSecret the chart creates no Secret of its own: put ZHIKU_GATEWAY_ADMIN_PASSWORD, ZHIKU_GATEWAY_OIDC_CLIENT_SECRET or ZHIKU_GATEWAY_OIDC_STATE_SECRET into %s, or name a Secret in gateway.identity.existingSecret / gateway.oidc.existingSecret, instead of gateway.identity.adminPassword, gateway.oidc.clientSecret and gateway.oidc.stateSecret" .Values.secrets.existingSecret) }}
{{- end }}
{{- if $o.existingSecret }}
{{- if and $o.clientSecret $o.clientSecretKey }}
{{- fail "set either gateway.oidc.clientSecret or gateway.oidc.existingSecret with clientSecretKey, not both (clientSecretKey: \"\" reads no client secret from the Secret)" }}
{{- end }}
{{- if and $o.stateSecret $o.stateSecretKey }}
{{- fail "set either gateway.oidc.stateSecret or gateway.oidc.existingSecret with stateSecretKey, not both" }}
{{- end }}
{{- if not (or $o.clientSecretKey $o.stateSecretKey) }}
{{- fail "gateway.oidc.existingSecret names no key: set gateway.oidc.clientSecretKey and/or gateway.oidc.stateSecretKey" }}
{{- end }}
{{- end }}
{{- if $o.issuer }}
{{- if not $o.clientId }}
{{- fail "gateway.oidc.issuer needs gateway.oidc.clientId (the client registered at the provider)" }}
{{- end }}
{{- if and (include "zhiku.gatewayReplicated" .) (not (include "zhiku.oidcStateKeySource" .)) }}
{{- fail "gateway.oidc: several gateway replicas need one key for the sign-in state cookie, or a sign-in whose callback reaches another replica fails with state_mismatch. Set gateway.oidc.clientSecret (a confidential client) or gateway.oidc.stateSecret, or gateway.oidc.existingSecret with clientSecretKey / stateSecretKey" }}
{{- end }}
{{- end }}
{{- end }}
