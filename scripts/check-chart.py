"""The checks of scripts/check-chart that read files: the values schema, and
the facts of the chart's renders. Needs PyYAML and jsonschema (both come with
kubernetes-validate).

  check-chart.py schema VALUES_SCHEMA_JSON
      draft 7, and additionalProperties false on every object it defines
  check-chart.py split OUT_DIR RENDER...
      writes each render's objects to OUT_DIR/NAME.core, its CRD objects
      (ServiceMonitors, unknown to kubernetes-validate) to OUT_DIR/NAME.crd
  check-chart.py facts RENDER_DIR
      RENDER_DIR holds one `helm template` output per values file, named after
      it (minimal-values.yaml, ...); prints one line per fact, "ok FACT
      (detail)" or "FACT: what is wrong"

Exits 1 when a check fails.
"""

import glob
import json
import os
import re
import sys

import jsonschema
import yaml

# The variables each subcommand reads (`fxtriage <command> --help`), and those
# the chart must set for it to start inside a pod.
READS = {
    "ingest": {"FXTRIAGE_DATABASE_URL", "FXTRIAGE_DIMSE_ADDR", "FXTRIAGE_DIMSE_INSTANCE_MEMORY_MB",
               "FXTRIAGE_DIMSE_MAX_ASSOCIATIONS", "FXTRIAGE_DIMSE_MEMORY_BUDGET_MB", "FXTRIAGE_INGEST_HTTP_ADDR",
               "FXTRIAGE_KAFKA_BROKERS", "FXTRIAGE_KAFKA_PROPERTIES", "FXTRIAGE_LOG", "FXTRIAGE_LOG_FORMAT",
               "FXTRIAGE_NAMESPACE", "FXTRIAGE_OTLP_ENDPOINT", "FXTRIAGE_S3_ACCESS_KEY_ID", "FXTRIAGE_S3_BUCKET",
               "FXTRIAGE_S3_ENDPOINT", "FXTRIAGE_S3_REGION", "FXTRIAGE_S3_SECRET_ACCESS_KEY", "FXTRIAGE_SITES",
               "FXTRIAGE_STORE_DIR", "FXTRIAGE_TOPIC_PARTITIONS", "FXTRIAGE_TOPIC_REPLICATION"},
    "inference": {"FXTRIAGE_EXECUTION_PROVIDER", "FXTRIAGE_HEALTH_ADDR", "FXTRIAGE_INTRA_THREADS",
                  "FXTRIAGE_KAFKA_BROKERS", "FXTRIAGE_KAFKA_PROPERTIES", "FXTRIAGE_LOG", "FXTRIAGE_LOG_FORMAT",
                  "FXTRIAGE_MAX_BATCH", "FXTRIAGE_MAX_IN_FLIGHT", "FXTRIAGE_MAX_WAIT_MS", "FXTRIAGE_MODEL_DIR",
                  "FXTRIAGE_MODEL_SESSIONS", "FXTRIAGE_NAMESPACE", "FXTRIAGE_ORT_SPINNING", "FXTRIAGE_OTLP_ENDPOINT",
                  "FXTRIAGE_S3_ACCESS_KEY_ID", "FXTRIAGE_S3_BUCKET", "FXTRIAGE_S3_ENDPOINT", "FXTRIAGE_S3_REGION",
                  "FXTRIAGE_S3_SECRET_ACCESS_KEY", "FXTRIAGE_STORE_DIR", "FXTRIAGE_TOPIC_PARTITIONS",
                  "FXTRIAGE_TOPIC_REPLICATION", "ORT_DYLIB_PATH"},
    "prioritizer": {"FXTRIAGE_DATABASE_URL", "FXTRIAGE_HEALTH_ADDR", "FXTRIAGE_KAFKA_BROKERS",
                    "FXTRIAGE_KAFKA_PROPERTIES", "FXTRIAGE_LOG", "FXTRIAGE_LOG_FORMAT", "FXTRIAGE_NAMESPACE",
                    "FXTRIAGE_OTLP_ENDPOINT", "FXTRIAGE_SITES", "FXTRIAGE_TOPIC_PARTITIONS",
                    "FXTRIAGE_TOPIC_REPLICATION"},
    "api": {"FXTRIAGE_API_HTTP_ADDR", "FXTRIAGE_CLAIM_MINUTES", "FXTRIAGE_DATABASE_URL", "FXTRIAGE_KAFKA_BROKERS",
            "FXTRIAGE_KAFKA_PROPERTIES", "FXTRIAGE_LOG", "FXTRIAGE_LOG_FORMAT", "FXTRIAGE_NAMESPACE",
            "FXTRIAGE_OTLP_ENDPOINT", "FXTRIAGE_S3_ACCESS_KEY_ID", "FXTRIAGE_S3_BUCKET", "FXTRIAGE_S3_ENDPOINT",
            "FXTRIAGE_S3_REGION", "FXTRIAGE_S3_SECRET_ACCESS_KEY", "FXTRIAGE_STORE_DIR",
            "FXTRIAGE_TOPIC_PARTITIONS", "FXTRIAGE_TOPIC_REPLICATION"},
    "dispatch serve": {"FXTRIAGE_DATABASE_URL", "FXTRIAGE_HEALTH_ADDR", "FXTRIAGE_HL7_ADDR", "FXTRIAGE_LOG",
                       "FXTRIAGE_LOG_FORMAT", "FXTRIAGE_OTLP_ENDPOINT", "FXTRIAGE_S3_ACCESS_KEY_ID",
                       "FXTRIAGE_S3_BUCKET", "FXTRIAGE_S3_ENDPOINT", "FXTRIAGE_S3_REGION",
                       "FXTRIAGE_S3_SECRET_ACCESS_KEY", "FXTRIAGE_SITES", "FXTRIAGE_STORE_DIR"},
    "migrate": {"FXTRIAGE_DATABASE_URL", "FXTRIAGE_LOG", "FXTRIAGE_LOG_FORMAT", "FXTRIAGE_OTLP_ENDPOINT"},
    "sites apply": {"FXTRIAGE_DATABASE_URL", "FXTRIAGE_LOG", "FXTRIAGE_LOG_FORMAT", "FXTRIAGE_OTLP_ENDPOINT"},
}
NEEDS = {
    "ingest": {"FXTRIAGE_DATABASE_URL", "FXTRIAGE_KAFKA_BROKERS", "FXTRIAGE_S3_BUCKET", "FXTRIAGE_DIMSE_ADDR",
               "FXTRIAGE_INGEST_HTTP_ADDR"},
    "inference": {"FXTRIAGE_KAFKA_BROKERS", "FXTRIAGE_S3_BUCKET", "FXTRIAGE_HEALTH_ADDR"},
    "prioritizer": {"FXTRIAGE_DATABASE_URL", "FXTRIAGE_KAFKA_BROKERS", "FXTRIAGE_HEALTH_ADDR"},
    "api": {"FXTRIAGE_DATABASE_URL", "FXTRIAGE_KAFKA_BROKERS", "FXTRIAGE_S3_BUCKET", "FXTRIAGE_API_HTTP_ADDR"},
    "dispatch serve": {"FXTRIAGE_DATABASE_URL", "FXTRIAGE_S3_BUCKET", "FXTRIAGE_HEALTH_ADDR"},
    "migrate": {"FXTRIAGE_DATABASE_URL"},
    "sites apply": {"FXTRIAGE_DATABASE_URL"},
}
LISTEN_VARIABLES = {"FXTRIAGE_DIMSE_ADDR", "FXTRIAGE_INGEST_HTTP_ADDR", "FXTRIAGE_API_HTTP_ADDR",
                    "FXTRIAGE_HEALTH_ADDR", "FXTRIAGE_HL7_ADDR"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", re.I)
COMMON_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                 "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of")
NO_ROOT = "no container runs as root: runAsNonRoot, a non-zero UID, read-only root, ALL capabilities dropped, RuntimeDefault seccomp"
# Custom resources: kubernetes-validate has no schema for them.
CRD_GROUPS = ("monitoring.coreos.com/",)
COMPONENTS = ("ingest", "inference", "prioritizer", "api", "dispatch")

# What the chart's ServiceMonitors may hold: a strict subset of the Prometheus
# Operator's CRD (monitoring.coreos.com/v1), whose full schema is not
# obtainable here.
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object", "additionalProperties": False, "required": ["name", "labels"],
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253},
                "namespace": {"type": "string", "minLength": 1},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "namespaceSelector": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"any": {"type": "boolean"},
                                   "matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "selector": {
                    "type": "object", "additionalProperties": False, "required": ["matchLabels"],
                    "properties": {"matchLabels": {"type": "object", "minProperties": 1,
                                                   "additionalProperties": {"type": "string"}}},
                },
                "endpoints": {
                    "type": "array", "minItems": 1,
                    "items": {
                        "type": "object", "additionalProperties": False, "required": ["port"],
                        "properties": {
                            "port": {"type": "string", "minLength": 1},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                            "scrapeTimeout": {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                        },
                    },
                },
            },
        },
    },
}


class Facts:
    def __init__(self):
        self.containers = 0
        self.problems = {}
        self.order = []
        self.details = {}

    def check(self, fact, condition, problem):
        if fact not in self.problems:
            self.problems[fact] = []
            self.order.append(fact)
        if not condition:
            self.problems[fact].append(problem)
        return condition

    def detail(self, fact, text):
        self.details[fact] = text

    def report(self):
        failed = False
        for fact in self.order:
            problems = self.problems[fact]
            if problems:
                failed = True
                shown = "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
                print(f"{fact}: {shown}")
            else:
                detail = self.details.get(fact)
                print(f"ok {fact}" + (f" ({detail})" if detail else ""))
        return 1 if failed else 0


def load(path):
    return [doc for doc in yaml.safe_load_all(open(path)) if doc]


def ident(obj):
    return f"{obj['kind']}/{obj['metadata']['name']}"


def pod_specs(docs):
    """(object, pod spec, pod labels) of every Deployment and Job."""
    for obj in docs:
        if obj["kind"] in ("Deployment", "Job"):
            template = obj["spec"]["template"]
            yield obj, template["spec"], template["metadata"].get("labels", {})


def containers(spec):
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def command_of(container):
    args = container.get("args", [])
    if args[:2] in (["dispatch", "serve"], ["sites", "apply"]):
        return " ".join(args[:2])
    return args[0] if args else ""


def selects(selector, labels):
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def env_of(container):
    return {item["name"]: item for item in container.get("env", [])}


def check_render(facts, name, docs):
    workloads = list(pod_specs(docs))
    deployments = {obj["metadata"]["name"]: (obj, spec, labels) for obj, spec, labels in workloads
                   if obj["kind"] == "Deployment"}
    services = [obj for obj in docs if obj["kind"] == "Service"]

    # Labels.
    fact = "every object carries the app.kubernetes.io/* labels, and a component where it belongs"
    for obj in docs:
        labels = obj["metadata"].get("labels", {})
        missing = [label for label in COMMON_LABELS if label not in labels]
        if obj["kind"] != "ServiceAccount" and "app.kubernetes.io/component" not in labels:
            missing.append("app.kubernetes.io/component")
        facts.check(fact, not missing, f"{name} {ident(obj)} lacks {', '.join(missing)}")

    # Security contexts.
    fact = NO_ROOT
    count = 0
    for obj, spec, _ in workloads:
        pod = spec.get("securityContext", {})
        facts.check(fact, pod.get("runAsNonRoot") is True and pod.get("runAsUser", 0) > 0
                    and pod.get("seccompProfile", {}).get("type") == "RuntimeDefault",
                    f"{name} {ident(obj)}: pod securityContext {pod}")
        for container in containers(spec):
            count += 1
            context = container.get("securityContext", {})
            capabilities = context.get("capabilities", {})
            facts.check(fact, context.get("runAsNonRoot") is True and context.get("runAsUser", pod.get("runAsUser", 0)) > 0
                        and context.get("allowPrivilegeEscalation") is False
                        and context.get("privileged", False) is False
                        and context.get("readOnlyRootFilesystem") is True
                        and capabilities.get("drop") == ["ALL"] and not capabilities.get("add")
                        and context.get("seccompProfile", {}).get("type") == "RuntimeDefault",
                        f"{name} {ident(obj)} container {container['name']}: {context}")
    facts.containers += count

    fact = "every container writes only to /tmp, an emptyDir, and TMPDIR points there"
    for obj, spec, _ in workloads:
        volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
        for container in containers(spec):
            mounts = {mount["mountPath"]: mount["name"] for mount in container.get("volumeMounts", [])}
            tmp = volumes.get(mounts.get("/tmp"), {})
            facts.check(fact, "emptyDir" in tmp and env_of(container).get("TMPDIR", {}).get("value") == "/tmp",
                        f"{name} {ident(obj)} container {container['name']}")

    # Commands and their variables.
    fact = "each container runs a real subcommand with variables it reads, and those it needs"
    for obj, spec, _ in workloads:
        for container in containers(spec):
            command = command_of(container)
            if not facts.check(fact, command in READS, f"{name} {ident(obj)}: unknown command {container.get('args')}"):
                continue
            env = env_of(container)
            unknown = sorted(var for var in env if var.startswith(("FXTRIAGE_", "ORT_")) and var not in READS[command])
            missing = sorted(NEEDS[command] - set(env))
            facts.check(fact, not unknown and not missing,
                        f"{name} {ident(obj)} ({command}): not read {unknown}, missing {missing}")

    fact = "every listener binds all addresses (0.0.0.0 or [::]) on a declared container port"
    for obj, spec, _ in workloads:
        for container in containers(spec):
            ports = {port["containerPort"] for port in container.get("ports", [])}
            for var, item in env_of(container).items():
                if var not in LISTEN_VARIABLES:
                    continue
                value = item.get("value", "")
                host, _, port = value.rpartition(":")
                facts.check(fact, host in ("0.0.0.0", "[::]") and port.isdigit() and int(port) in ports,
                            f"{name} {ident(obj)} {var}={value!r}, container ports {sorted(ports)}")

    fact = "credentials only through secretKeyRef; no Secret object and no credential value in a render"
    facts.check(fact, not any(obj["kind"] == "Secret" for obj in docs), f"{name}: renders a Secret")
    for obj, spec, _ in workloads:
        for container in containers(spec):
            env = env_of(container)
            defined = []
            for item in container.get("env", []):
                var, value = item["name"], item.get("value")
                if SECRET_NAME.search(var):
                    facts.check(fact, "secretKeyRef" in item.get("valueFrom", {}),
                                f"{name} {ident(obj)} {var} is not from a Secret")
                if value is not None:
                    # Kubernetes expands $(VAR) only for variables defined above.
                    for reference in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value):
                        facts.check(fact, reference in defined and "secretKeyRef" in env[reference].get("valueFrom", {}),
                                    f"{name} {ident(obj)} {var} refers to $({reference}), not a Secret variable above it")
                defined.append(var)
            url = env.get("FXTRIAGE_DATABASE_URL", {})
            if "value" in url:
                password = re.search(r"password=('[^']*'|\S+)", url["value"])
                facts.check(fact, password and password.group(1) == "'$(SECRET_POSTGRES_PASSWORD)'",
                            f"{name} {ident(obj)} FXTRIAGE_DATABASE_URL carries a password")
            properties = env.get("FXTRIAGE_KAFKA_PROPERTIES", {}).get("value", "")
            for item in filter(None, properties.split(",")):
                key, _, value = item.partition("=")
                if re.search(r"password|secret|jaas", key):
                    facts.check(fact, re.fullmatch(r"\$\(SECRET_[A-Z_]+\)", value),
                                f"{name} {ident(obj)} Kafka property {key} is written in the render")

    # Probes.
    fact = "every service has startup, liveness and readiness probes on /health/live and /health/ready of a declared port"
    for obj, spec, _ in workloads:
        if obj["kind"] != "Deployment":
            continue
        for container in spec["containers"]:
            names = {port["name"] for port in container.get("ports", [])}
            for probe, path in (("startupProbe", "/health/live"), ("livenessProbe", "/health/live"),
                                ("readinessProbe", "/health/ready")):
                http = container.get(probe, {}).get("httpGet", {})
                facts.check(fact, http.get("path") == path and http.get("port") in names,
                            f"{name} {ident(obj)} {probe} {http}")

    # Services, budgets, autoscaler, ingress.
    fact = "every Service selects one Deployment and targets a named port of it"
    for service in services:
        selector = service["spec"]["selector"]
        matched = [deployment for deployment, (_, _, labels) in deployments.items() if selects(selector, labels)]
        if not facts.check(fact, len(matched) == 1, f"{name} {ident(service)} selects {matched}"):
            continue
        _, spec, _ = deployments[matched[0]]
        names = {port["name"] for container in spec["containers"] for port in container.get("ports", [])}
        for port in service["spec"]["ports"]:
            facts.check(fact, port["targetPort"] in names, f"{name} {ident(service)} targets {port['targetPort']}")

    fact = "every PodDisruptionBudget covers a Deployment of two replicas or more"
    autoscaled = {obj["spec"]["scaleTargetRef"]["name"]: obj for obj in docs if obj["kind"] == "HorizontalPodAutoscaler"}
    for budget in (obj for obj in docs if obj["kind"] == "PodDisruptionBudget"):
        matched = [deployment for deployment, (_, _, labels) in deployments.items()
                   if selects(budget["spec"]["selector"]["matchLabels"], labels)]
        if not facts.check(fact, len(matched) == 1, f"{name} {ident(budget)} selects {matched}"):
            continue
        deployment = deployments[matched[0]][0]
        replicas = (autoscaled[matched[0]]["spec"]["minReplicas"] if matched[0] in autoscaled
                    else deployment["spec"].get("replicas", 1))
        facts.check(fact, replicas >= 2, f"{name} {ident(budget)}: {replicas} replica(s)")

    fact = "the HorizontalPodAutoscaler targets inference, whose Deployment then sets no replicas"
    for target, hpa in autoscaled.items():
        facts.check(fact, target in deployments and target.endswith("-inference")
                    and "replicas" not in deployments[target][0]["spec"],
                    f"{name} {ident(hpa)} targets {target}")

    fact = "every Ingress has a class and TLS for its hosts, and routes to a Service port that exists"
    ports_of = {service["metadata"]["name"]: {port["port"] for port in service["spec"]["ports"]} for service in services}
    for ingress in (obj for obj in docs if obj["kind"] == "Ingress"):
        spec = ingress["spec"]
        hosts = {rule["host"] for rule in spec["rules"]}
        tls_hosts = {host for tls in spec.get("tls", []) for host in tls["hosts"]}
        facts.check(fact, spec.get("ingressClassName") and hosts and hosts <= tls_hosts,
                    f"{name} {ident(ingress)}: class {spec.get('ingressClassName')}, hosts {hosts}, TLS {tls_hosts}")
        for rule in spec["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                facts.check(fact, backend["port"]["number"] in ports_of.get(backend["name"], set()),
                            f"{name} {ident(ingress)} routes to {backend}")

    fact = "the migration Job is a pre-install,pre-upgrade hook deleted when it succeeds, running migrate first"
    jobs = [obj for obj in docs if obj["kind"] == "Job"]
    facts.check(fact, len(jobs) == 1, f"{name}: {len(jobs)} Jobs")
    for job in jobs:
        annotations = job["metadata"].get("annotations", {})
        spec = job["spec"]["template"]["spec"]
        facts.check(fact, annotations.get("helm.sh/hook") == "pre-install,pre-upgrade"
                    and "hook-succeeded" in annotations.get("helm.sh/hook-delete-policy", "")
                    and "before-hook-creation" in annotations.get("helm.sh/hook-delete-policy", "")
                    and spec.get("restartPolicy") == "Never"
                    and command_of(containers(spec)[0]) == "migrate",
                    f"{name} {ident(job)}: {annotations}")

    # Network policies.
    policies = [obj for obj in docs if obj["kind"] == "NetworkPolicy"]
    if policies:
        fact = "network policies: every pod is covered; ingest admits only DICOM and HTTP, api only HTTP, the rest only metrics (and HL7); every egress rule names ports"
        allowed = {"ingest": {"dicom", "http"}, "api": {"http"}, "inference": {"metrics"},
                   "prioritizer": {"metrics"}, "dispatch": {"metrics", "hl7"}, "migrate": set()}
        for obj, spec, labels in workloads:
            covering = [policy for policy in policies if selects(policy["spec"]["podSelector"]["matchLabels"], labels)]
            if not facts.check(fact, len(covering) == 1, f"{name} {ident(obj)} is covered by {len(covering)} policies"):
                continue
            policy = covering[0]
            component = labels["app.kubernetes.io/component"]
            declared = {port["name"] for container in spec["containers"] for port in container.get("ports", [])}
            admitted = {port["port"] for rule in policy["spec"].get("ingress", []) for port in rule.get("ports", [])}
            rules_without_ports = [rule for rule in policy["spec"].get("ingress", []) if not rule.get("ports")]
            facts.check(fact, admitted <= allowed[component] and admitted <= declared and not rules_without_ports,
                        f"{name} {ident(policy)} admits {sorted(admitted)}")
            facts.check(fact, set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
                        and all(rule.get("ports") for rule in policy["spec"].get("egress", [])),
                        f"{name} {ident(policy)}: an egress rule without ports, or a policy type missing")

    # ServiceMonitors: the CRD's shape, and a Service port behind each endpoint.
    monitors = [obj for obj in docs if obj["kind"] == "ServiceMonitor"]
    if monitors:
        fact = "ServiceMonitors (a CRD kubernetes-validate does not know): valid against a strict subset of monitoring.coreos.com/v1, each endpoint a named port of a selected Service"
        validator = jsonschema.Draft7Validator(SERVICE_MONITOR_SCHEMA)
        for monitor in monitors:
            errors = sorted(validator.iter_errors(monitor), key=lambda error: list(error.path))
            facts.check(fact, not errors, f"{name} {ident(monitor)}: " + "; ".join(
                f"{'.'.join(map(str, error.path))}: {error.message}" for error in errors[:3]))
            selected = [service for service in services
                        if selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"].get("labels", {}))]
            for endpoint in monitor["spec"]["endpoints"]:
                facts.check(fact, len(selected) == 1 and endpoint["port"] in {port["name"] for port in selected[0]["spec"]["ports"]},
                            f"{name} {ident(monitor)} endpoint {endpoint['port']} on {[ident(s) for s in selected]}")
        facts.check(fact, {monitor["metadata"]["labels"]["app.kubernetes.io/component"] for monitor in monitors} == set(COMPONENTS),
                    f"{name}: ServiceMonitors for {sorted(m['metadata']['name'] for m in monitors)}")


def inference_container(docs):
    for obj, spec, _ in pod_specs(docs):
        if obj["kind"] == "Deployment" and obj["metadata"]["name"].endswith("-inference"):
            return spec, spec["containers"][0]
    raise AssertionError("no inference Deployment")


def kinds(docs):
    counts = {}
    for obj in docs:
        counts[obj["kind"]] = counts.get(obj["kind"], 0) + 1
    return counts


def check_values_files(facts, renders):
    gpu_files = ("gpu-values", "full-values", "nhs-network-values")
    fact = "GPU values give inference the GPU image, CUDA, an nvidia.com/gpu limit, the GPU nodeSelector and toleration"
    for name in gpu_files:
        spec, container = inference_container(renders[name])
        env = env_of(container)
        facts.check(fact, container["resources"].get("limits", {}).get("nvidia.com/gpu", 0) >= 1
                    and env["FXTRIAGE_EXECUTION_PROVIDER"]["value"].startswith("cuda")
                    and "-gpu:" in container["image"]
                    and spec.get("nodeSelector", {}).get("nvidia.com/gpu.present") == "true"
                    and any(toleration.get("key") == "nvidia.com/gpu" for toleration in spec.get("tolerations", [])),
                    f"{name}: inference {container['resources']}, {container['image']}, {spec.get('nodeSelector')}")
    facts.detail(fact, ", ".join(gpu_files))

    fact = "CPU values ask for no GPU anywhere and run inference on the CPU provider"
    for name in ("cpu-values", "minimal-values"):
        spec, container = inference_container(renders[name])
        text = yaml.safe_dump_all(renders[name])
        facts.check(fact, "nvidia.com/gpu" not in text
                    and env_of(container)["FXTRIAGE_EXECUTION_PROVIDER"]["value"] == "cpu"
                    and "-gpu:" not in container["image"],
                    f"{name}: GPU in the render or provider {env_of(container)['FXTRIAGE_EXECUTION_PROVIDER']}")

    fact = "minimal values: five Deployments, the migration Job, network policies and four budgets by default; no Ingress, HPA or ServiceMonitor"
    counts = kinds(renders["minimal-values"])
    facts.check(fact, counts.get("Deployment") == 5 and counts.get("Job") == 1 and counts.get("NetworkPolicy") == 6
                and counts.get("PodDisruptionBudget") == 4 and counts.get("ServiceAccount") == 1
                and not any(kind in counts for kind in ("Ingress", "HorizontalPodAutoscaler", "ServiceMonitor")),
                f"minimal-values: {counts}")

    fact = "full values: Ingress with TLS (API and STOW-RS), HPA, five ServiceMonitors, five budgets, six network policies, the HL7 Service"
    counts = kinds(renders["full-values"])
    names = {obj["metadata"]["name"] for obj in renders["full-values"]}
    facts.check(fact, counts.get("Ingress") == 2 and counts.get("HorizontalPodAutoscaler") == 1
                and counts.get("ServiceMonitor") == 5 and counts.get("PodDisruptionBudget") == 5
                and counts.get("NetworkPolicy") == 6 and "fxtriage-dispatch-hl7" in names,
                f"full-values: {counts}")

    fact = "NHS example: SASL_SSL with the SASL user from a Secret, sslmode=verify-full, S3 in eu-west-2, TLS ingress, ServiceMonitors, network policies"
    docs = renders["nhs-network-values"]
    for obj, spec, _ in pod_specs(docs):
        for container in containers(spec):
            env = env_of(container)
            if "FXTRIAGE_KAFKA_PROPERTIES" in env:
                properties = env["FXTRIAGE_KAFKA_PROPERTIES"]["value"]
                facts.check(fact, "security.protocol=SASL_SSL" in properties
                            and "sasl.password=$(SECRET_KAFKA_SASL_PASSWORD)" in properties,
                            f"{ident(obj)}: {properties}")
            if "FXTRIAGE_DATABASE_URL" in env:
                facts.check(fact, "sslmode=verify-full" in env["FXTRIAGE_DATABASE_URL"].get("value", ""),
                            f"{ident(obj)}: no sslmode=verify-full")
            if "FXTRIAGE_S3_REGION" in env:
                facts.check(fact, env["FXTRIAGE_S3_REGION"]["value"] == "eu-west-2", f"{ident(obj)}: S3 region")
    counts = kinds(docs)
    facts.check(fact, counts.get("Ingress") == 1 and counts.get("ServiceMonitor") == 5 and counts.get("NetworkPolicy") == 6,
                f"nhs-network-values: {counts}")


def check_schema(path):
    schema = json.load(open(path))
    if schema.get("$schema") != "http://json-schema.org/draft-07/schema#":
        print(f"{path}: not draft 7")
        return 1
    # Maps of names to strings are closed by their value type; these two pass
    # Kubernetes' (or a parent chart's) objects through unchanged.
    pass_through = {"/definitions/affinity", "/properties/global"}
    open_objects = []

    def walk(node, where):
        if not isinstance(node, dict):
            return
        additional = node.get("additionalProperties")
        closed = additional is False or isinstance(additional, dict)
        if (node.get("type") == "object" and not closed and where not in pass_through) or \
                ("properties" in node and additional is not False):
            open_objects.append(where)
        for key in ("properties", "definitions"):
            for name, sub in node.get(key, {}).items():
                walk(sub, f"{where}/{key}/{name}")
        for key in ("items", "additionalProperties", "not", "propertyNames"):
            walk(node.get(key), f"{where}/{key}")
        for key in ("oneOf", "anyOf", "allOf"):
            for index, sub in enumerate(node.get(key, [])):
                walk(sub, f"{where}/{key}/{index}")

    walk(schema, "")
    if open_objects:
        print(f"{path}: objects without additionalProperties false: {', '.join(open_objects)}")
        return 1
    return 0


def split(out_dir, renders):
    for path in renders:
        name = os.path.splitext(os.path.basename(path))[0]
        docs = load(path)
        crds = [doc for doc in docs if doc["apiVersion"].startswith(CRD_GROUPS)]
        core = [doc for doc in docs if doc not in crds]
        for suffix, part in ((".core", core), (".crd", crds)):
            with open(os.path.join(out_dir, name + suffix), "w") as out:
                yaml.safe_dump_all(part, out, sort_keys=False)
    return 0


def check_facts(render_dir):
    renders = {os.path.splitext(os.path.basename(path))[0]: load(path)
               for path in sorted(glob.glob(os.path.join(render_dir, "*.yaml")))}
    expected = {"cpu-values", "gpu-values", "minimal-values", "full-values", "nhs-network-values"}
    facts = Facts()
    if not facts.check("every values file rendered", expected <= set(renders), f"renders: {sorted(renders)}"):
        return facts.report()
    for name, docs in renders.items():
        check_render(facts, name, docs)
    facts.detail(NO_ROOT, f"{facts.containers} containers in {len(renders)} renders")
    check_values_files(facts, renders)
    return facts.report()


def main():
    command, arguments = sys.argv[1], sys.argv[2:]
    if command == "schema":
        return check_schema(*arguments)
    if command == "split":
        return split(arguments[0], arguments[1:])
    if command == "facts":
        return check_facts(*arguments)
    print(f"unknown command {command}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
