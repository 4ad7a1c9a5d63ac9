"""`gptoss-operator`: run the operator, print its CRD, or plan and render a GptOssDeployment offline.

    gptoss-operator run                                  start the operator (settings from GPTOSS_* env)
    gptoss-operator crd                                  the CustomResourceDefinition, as YAML
    gptoss-operator plan -f CR.yaml [-o text|json]       the serving plan, in words or as JSON
    gptoss-operator render -f CR.yaml [--pod-monitor] [--keda]
                                                         every child object, as multi-document YAML

Bad input (a missing file, malformed YAML, another kind, an invalid spec, an impossible plan) exits with
status 2 and one line per problem naming the field, e.g. `spec.gpu.count: ...`; never a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

import yaml
from pydantic import BaseModel, ValidationError

from gptoss_operator import names, trust
from gptoss_operator.api import GptOssDeployment
from gptoss_operator.builders import ClusterFeatures, build_children
from gptoss_operator.planner import PlanError, explain, gpu_placement, plan
from gptoss_operator.settings import OperatorSettings
from gptoss_runtime.plan import ServingPlan

EXIT_BAD_INPUT: Final = 2
PLACEHOLDER_UID: Final = "00000000-0000-0000-0000-000000000000"
PLACEHOLDER_GENERATION: Final = 1


class InputError(Exception):
    """Bad input; the message names the file or field and the fix."""


# ------------------------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class LoadedDeployment:
    """A validated custom resource and where it came from (for messages)."""

    where: str
    cr: GptOssDeployment
    # Secrets given in the same input, by (namespace or "", name): what `render` knows of a token Secret's mark.
    secrets: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)


def load_deployments(path: str, stdin: TextIO | None = None) -> list[LoadedDeployment]:
    """Every GptOssDeployment in a YAML file (`-` reads stdin); other kinds are skipped."""
    documents = _read_documents(path, stdin)
    deployments: list[LoadedDeployment] = []
    skipped: list[str] = []
    secrets = _secrets_in(documents)
    for index, document in enumerate(documents):
        where = path if len(documents) == 1 else f"{path} (document {index + 1})"
        if not isinstance(document, dict):
            raise InputError(f"{where}: expected a YAML mapping (a Kubernetes object), got {type(document).__name__}")
        kind = document.get("kind")
        if kind != names.KIND:
            skipped.append(f"{where}: kind {kind!r}")
            continue
        deployments.append(LoadedDeployment(where, parse_deployment(document, where), secrets))
    if not deployments:
        found = "; ".join(skipped) or "no objects"
        raise InputError(f"{path}: kind: expected {names.KIND} (apiVersion {names.API_VERSION}); found {found}")
    return deployments


def _secrets_in(documents: Sequence[Any]) -> dict[tuple[str, str], Mapping[str, Any]]:
    """The metadata of each Secret among `documents` (its data is never looked at)."""
    found: dict[tuple[str, str], Mapping[str, Any]] = {}
    for document in documents:
        if isinstance(document, dict) and document.get("kind") == "Secret":
            meta = document.get("metadata") or {}
            found[str(meta.get("namespace") or ""), str(meta.get("name"))] = meta
    return found


def _read_documents(path: str, stdin: TextIO | None) -> list[Any]:
    try:
        text = (stdin or sys.stdin).read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read: {error}") from None
    try:
        documents = [document for document in yaml.safe_load_all(text) if document is not None]
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not valid YAML: {_yaml_problem(error)}") from None
    if not documents:
        raise InputError(f"{path}: the file is empty; expected a {names.KIND}")
    return documents


def _yaml_problem(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"{error.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return str(error).replace("\n", " ")


def parse_deployment(document: dict[str, Any], where: str = "input") -> GptOssDeployment:
    """Validate one object; a placeholder uid and generation stand in for those a cluster would set."""
    api_version = document.get("apiVersion")
    if api_version != names.API_VERSION:
        raise InputError(f"{where}: apiVersion: expected {names.API_VERSION}, got {api_version!r}")
    metadata = document.get("metadata")
    if isinstance(metadata, dict):
        metadata = {"uid": PLACEHOLDER_UID, "generation": PLACEHOLDER_GENERATION, **metadata}
    try:
        return GptOssDeployment.model_validate({**document, "metadata": metadata})
    except ValidationError as error:
        raise InputError("\n".join(f"{where}: {line}" for line in validation_messages(error))) from None


def validation_messages(error: ValidationError, root: type[BaseModel] = GptOssDeployment) -> list[str]:
    """pydantic errors as `dotted.camelCase.path: message` lines (list indexes as [n]); an unknown field
    gets the closest known name as the fix."""
    lines = []
    for item in error.errors(include_url=False):
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = _unknown_field_message(root, item["loc"])
        lines.append(f"{field_path(item['loc'])}: {message}")
    return lines


def _unknown_field_message(root: type[BaseModel], location: Sequence[int | str]) -> str:
    known = _field_names_at(root, location[:-1])
    if not known:
        return "unknown field; remove it"
    close = difflib.get_close_matches(str(location[-1]), known, n=1, cutoff=0.6)
    if close:
        return f"unknown field; did you mean {close[0]}?"
    return f"unknown field; known fields here: {', '.join(sorted(known))}"


def _field_names_at(model: type[BaseModel], location: Sequence[int | str]) -> list[str]:
    """The camelCase field names of the model found at `location` under `model` (empty if unknown)."""
    current: type[BaseModel] | None = model
    for part in location:
        if current is None:
            return []
        if isinstance(part, int):
            continue
        field = next((f for name, f in current.model_fields.items() if (f.alias or name) == part), None)
        current = _model_in(field.annotation) if field is not None else None
    if current is None:
        return []
    return [field.alias or name for name, field in current.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def field_path(location: Sequence[int | str]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path or "(root)"


def plan_for(loaded: LoadedDeployment, settings: OperatorSettings, err: TextIO | None = None) -> ServingPlan:
    """The plan, or an InputError for an impossible plan or a weights source the operator would refuse."""
    try:
        serving_plan = plan(loaded.cr.spec, settings)
    except PlanError as error:
        raise InputError(f"{loaded.where}: spec.{error}") from None
    refusal = weights_refusal(loaded, settings, err)
    if refusal is not None:
        raise InputError(f"{loaded.where}: {refusal.message}")
    return serving_plan


def weights_refusal(loaded: LoadedDeployment, settings: OperatorSettings, err: TextIO | None) -> trust.Refusal | None:
    """What the operator would refuse (docs/security.md): an endpoint off the allow-list, or a token Secret given
    in the input without its mark. A token Secret absent from the input cannot be checked here: a note says so."""
    cr = loaded.cr
    secret_name = trust.token_secret_name(cr.spec)
    secret = None
    if secret_name is not None:
        secret = loaded.secrets.get((cr.namespace, secret_name)) or loaded.secrets.get(("", secret_name))
        if secret is None and err is not None:
            err.write(
                f"note: {loaded.where}: Secret {secret_name} is not in the input; the operator uses it only if it "
                f"carries the label {names.LABEL_WEIGHTS_TOKEN}={names.LABEL_WEIGHTS_TOKEN_VALUE}\n"
            )
    return trust.weights_refusal(cr.spec, settings, cr.namespace, secret)


# ------------------------------------------------------------------------------------------ commands
@dataclass(frozen=True)
class _Io:
    out: TextIO
    err: TextIO


def _cmd_crd(_args: argparse.Namespace, io: _Io) -> int:
    from gptoss_operator.crd import render_crd_yaml

    io.out.write(render_crd_yaml())
    return 0


def _cmd_plan(args: argparse.Namespace, io: _Io) -> int:
    settings = OperatorSettings()
    for loaded in load_deployments(args.file):
        serving_plan = plan_for(loaded, settings, io.err)
        if args.output == "json":
            io.out.write(serving_plan.to_json())
        else:
            placement = gpu_placement(loaded.cr.spec)
            io.out.write(f"# {loaded.cr.namespace}/{loaded.cr.name}\n{explain(serving_plan, placement)}")
    return 0


def _cmd_render(args: argparse.Namespace, io: _Io) -> int:
    settings = OperatorSettings()
    features = ClusterFeatures(pod_monitor=args.pod_monitor, keda=args.keda)
    children: list[dict[str, Any]] = []
    for loaded in load_deployments(args.file):
        children += build_children(loaded.cr, plan_for(loaded, settings, io.err), settings, features)
    io.out.write(dump_yaml_documents(children))
    return 0


def _cmd_run(_args: argparse.Namespace, _io: _Io) -> int:
    from gptoss_operator.main import run

    run(OperatorSettings())
    return 0


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the plan JSON) as `|` blocks; no anchors or aliases (kubectl-friendly)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def dump_yaml_documents(objects: Sequence[dict[str, Any]]) -> str:
    return yaml.dump_all(objects, Dumper=_BlockDumper, sort_keys=False, explicit_start=True, width=120)


# ---------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gptoss-operator", description="Serve gpt-oss on Kubernetes.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", help="run the operator (settings from GPTOSS_* environment variables)")
    commands.add_parser("crd", help="print the GptOssDeployment CustomResourceDefinition")
    plan_parser = commands.add_parser("plan", help="explain the serving plan of a GptOssDeployment")
    plan_parser.add_argument("-f", "--file", required=True, help="the custom resource, as YAML (- for stdin)")
    plan_parser.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format")
    render_parser = commands.add_parser("render", help="print every child object as multi-document YAML")
    render_parser.add_argument("-f", "--file", required=True, help="the custom resource, as YAML (- for stdin)")
    render_parser.add_argument("--pod-monitor", action="store_true", help="as if the PodMonitor CRD existed")
    render_parser.add_argument("--keda", action="store_true", help="as if KEDA's CRDs existed")
    return parser


_COMMANDS: Final = {"run": _cmd_run, "crd": _cmd_crd, "plan": _cmd_plan, "render": _cmd_render}


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Entry point; returns the exit status (the console script exits with it)."""
    io = _Io(out=out or sys.stdout, err=err or sys.stderr)
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args, io)
    except InputError as error:
        io.err.write("".join(f"error: {line}\n" for line in str(error).splitlines()))
        return EXIT_BAD_INPUT
    except ValidationError as error:  # operator settings from the environment
        lines = validation_messages(error, root=OperatorSettings)
        io.err.write("".join(f"error: settings: {line}\n" for line in lines))
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
