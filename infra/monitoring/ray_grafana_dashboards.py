"""Write the Grafana dashboards that Ray generates, for a Grafana that runs apart from Ray.

Ray's dashboard process writes these files itself, on the head, at every start
(``/tmp/ray/session_latest/metrics/grafana/dashboards/*.json``), with the same
functions this script calls (``ray.dashboard.modules.metrics.grafana_dashboard_factory``).
A Grafana on the same machine reads them from there (infra/monitoring/). A
Grafana in another pod (kube-prometheus-stack on Kubernetes) cannot, so this
script produces them from the ``ray`` installed here; run it with the Ray
version the cluster runs (2.60.0, the image's), or the dashboards' panels and
uids may not match what the Ray dashboard embeds.

    # files, as Ray writes them
    python infra/monitoring/ray_grafana_dashboards.py --out /tmp/ray-dashboards

    # one ConfigMap per dashboard, labelled for the Grafana sidecar of kube-prometheus-stack
    python infra/monitoring/ray_grafana_dashboards.py --configmaps --namespace prometheus-system \\
      | kubectl apply --server-side -f -

``--server-side``: the larger dashboards exceed the 256 KiB that client-side
``kubectl apply`` can keep in its last-applied annotation.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

# Label (and value) the Grafana sidecar of kube-prometheus-stack watches for
# (grafana.sidecar.dashboards.label / labelValue in infra/kuberay/kube-prometheus-stack.values.yaml).
SIDECAR_LABEL = "grafana_dashboard"
SIDECAR_LABEL_VALUE = "1"
# A ConfigMap holds at most 1 MiB in all.
CONFIGMAP_LIMIT = 1024 * 1024
_GENERATOR = re.compile(r"^generate_(\w+)_grafana_dashboard$")


def generate() -> dict[str, dict]:
    """{file name: dashboard} for every dashboard Ray's factory generates, named as Ray names the files."""
    try:
        from ray.dashboard.modules.metrics import grafana_dashboard_factory as factory
    except ImportError as err:
        raise SystemExit(f"error: needs ray[default] installed ({err})") from err
    dashboards = {}
    for attr in sorted(dir(factory)):
        match = _GENERATOR.match(attr)
        if match:
            content, uid = getattr(factory, attr)()
            dashboard = json.loads(content)
            assert dashboard["uid"] == uid
            dashboards[f"{match.group(1)}_grafana_dashboard.json"] = dashboard
    if not dashboards:
        raise SystemExit("error: found no generate_*_grafana_dashboard functions in this ray")
    return dashboards


def compact(dashboard: dict) -> str:
    return json.dumps(dashboard, separators=(",", ":"), sort_keys=True)


def configmaps(dashboards: dict[str, dict], namespace: str) -> list[dict]:
    import ray

    maps = []
    for file_name, dashboard in dashboards.items():
        name = "ray-grafana-dashboard-" + file_name.removesuffix("_grafana_dashboard.json").replace("_", "-")
        body = compact(dashboard)
        if len(body.encode()) >= CONFIGMAP_LIMIT:
            raise SystemExit(f"error: {file_name} is {len(body.encode())} bytes, over a ConfigMap's 1 MiB")
        maps.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {SIDECAR_LABEL: SIDECAR_LABEL_VALUE, "app.kubernetes.io/part-of": "xling-study"},
                    "annotations": {"xling-study/ray-version": ray.__version__, "xling-study/uid": dashboard["uid"]},
                },
                "data": {file_name: body},
            }
        )
    return maps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--out", type=Path, help="folder to write the dashboards' JSON files into")
    what.add_argument("--configmaps", action="store_true", help="print one ConfigMap per dashboard (YAML) on stdout")
    parser.add_argument("--namespace", default="prometheus-system", help="the ConfigMaps' namespace (Grafana's)")
    args = parser.parse_args(argv)

    dashboards = generate()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for file_name, dashboard in dashboards.items():
            (args.out / file_name).write_text(json.dumps(dashboard, indent=4))
        print(f"wrote {len(dashboards)} dashboards to {args.out}", file=sys.stderr)
        return 0

    import yaml

    yaml.safe_dump_all(configmaps(dashboards, args.namespace), sys.stdout, sort_keys=False, width=1 << 30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
