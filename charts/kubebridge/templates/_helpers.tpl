{{/* Base name of every object: the release name, unless it already contains "kubebridge". */}}
{{- define "kubebridge.fullname" -}}
{{- if contains "kubebridge" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-kubebridge" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kubebridge.labels" -}}
app.kubernetes.io/name: kubebridge
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: kubebridge
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels of one agent: (dict "ctx" $ "component" "node-agent") */}}
{{- define "kubebridge.selectorLabels" -}}
app.kubernetes.io/name: kubebridge
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "kubebridge.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "kubebridge.leaseName" -}}
{{- printf "%s-events" (include "kubebridge.fullname" .) -}}
{{- end -}}

{{/* The config file (exporter/config.py keys), shared by both agents. */}}
{{- define "kubebridge.config" -}}
{{- $c := dict "listen_address" "0.0.0.0:9500" "log_level" .Values.logLevel "log_format" .Values.logFormat "cluster" .Values.cluster "scrape_timeout" .Values.scrapeTimeout "pod_refresh_interval" .Values.podRefreshInterval "label_allowlist" .Values.labelAllowlist "label_denylist" .Values.labelDenylist "relabel_configs" .Values.relabelConfigs -}}
{{- $kubelet := dict "insecure_skip_verify" .Values.kubelet.insecureSkipVerify -}}
{{- if .Values.kubelet.serverName }}{{ $_ := set $kubelet "server_name" .Values.kubelet.serverName }}{{ end -}}
{{- $_ := set $c "kubelet" $kubelet -}}
{{- $collectors := dict -}}
{{- $_ := set $collectors "events" (dict "leader_election" .Values.clusterAgent.leaderElection "lease_name" (include "kubebridge.leaseName" .)) -}}
{{- $_ := set $collectors "kube_system" (dict "namespaces" .Values.clusterAgent.kubeSystemNamespaces) -}}
{{- if .Values.clusterAgent.etcd.members -}}
{{- $members := list -}}
{{- range .Values.clusterAgent.etcd.members -}}
{{- $m := deepCopy . -}}
{{- if $.Values.clusterAgent.etcd.certsSecret -}}
{{- $_ := set $m "ca_file" "/etc/kubebridge/etcd/ca.crt" -}}
{{- $_ := set $m "cert_file" "/etc/kubebridge/etcd/tls.crt" -}}
{{- $_ := set $m "key_file" "/etc/kubebridge/etcd/tls.key" -}}
{{- end -}}
{{- $members = append $members $m -}}
{{- end -}}
{{- $_ := set $collectors "etcd" (dict "members" $members) -}}
{{- $_ := set $collectors "etcd_v2" (dict "members" $members) -}}
{{- end -}}
{{- if and .Values.nodeAgent.collectors.statsd .Values.nodeAgent.statsd.socketDir -}}
{{- $_ := set $collectors "statsd" (dict "unix_socket" "/var/run/kubebridge-statsd/dsd.socket") -}}
{{- end -}}
{{- $collectors = mergeOverwrite $collectors (deepCopy .Values.collectorConfig) -}}
{{- $_ := set $c "collectors" $collectors -}}
{{- toYaml $c -}}
{{- end -}}

{{/* `run` and the collector flags of one agent: (dict "on" <its collectors> "off" <the other's>) */}}
{{- define "kubebridge.args" -}}
- run
- --config=/etc/kubebridge/config.yaml
{{- range $name, $enabled := .on }}
- --{{ if not $enabled }}no-{{ end }}collector.{{ $name }}
{{- end }}
{{- range $name, $_ := .off }}
- --no-collector.{{ $name }}
{{- end }}
{{- end -}}

{{- define "kubebridge.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "kubebridge.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}

{{- define "kubebridge.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
  periodSeconds: 10
  timeoutSeconds: 5
{{- end -}}

{{- define "kubebridge.scrapeAnnotations" -}}
{{- if and .Values.scrapeAnnotations (not .Values.serviceMonitor.enabled) -}}
prometheus.io/scrape: "true"
prometheus.io/port: "9500"
prometheus.io/path: /metrics
{{- end -}}
{{- end -}}
