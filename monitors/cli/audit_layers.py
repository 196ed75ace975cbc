"""`embwarden audit --layers`: how much each transformer layer of a local encoder leaks.

Two forms, as `embwarden audit`: a model directory (`--encoder DIR|bundled:all-MiniLM-L6-v2 --aux
... [--targets ...]`) or a deployment's version (`--deployment NAME [--version V]`, whose encoder
must be local). Each layer's mean-pooled hidden state is attacked on its own (audits.layers); the
output is a table on stdout, `--json` and `--report PATH.html`. Numbers only.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from audits import corpora
from audits.encoders import LocalEncoder
from audits.errors import ConfigError
from audits.probes import make_probe

DEFAULT_CANARIES = 200
CANARY_SEED = 7


@dataclass
class LayerSetup:
    encoder: LocalEncoder
    encoder_label: str
    aux: corpora.Corpus
    aux_label: str
    targets: corpora.Corpus
    targets_label: str
    synthetic_targets: bool
    seed: int
    cache_dir: Path | None
    params: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def run(args: argparse.Namespace) -> int:
    from audits.layers import audit_layers, layer_count, select_layers
    from monitors.reports import layers_report

    setup = from_deployment(args) if args.deployment else from_directory(args)
    chosen = select_layers(args.layers, layer_count(setup.encoder), where="--layers")
    probes = tuple(args.probes) if args.probes else None
    for name, probe_params in setup.params.items():    # every parameter checked before anything is encoded
        make_probe(name, probe_params, seed=setup.seed)
    result = audit_layers(setup.encoder, setup.aux, setup.targets, probes=probes, params=setup.params,
                          seed=setup.seed, cache_dir=setup.cache_dir, layers=chosen,
                          synthetic_targets=setup.synthetic_targets)
    data = layers_report.document(result, {"encoder": setup.encoder_label, "aux": setup.aux_label,
                                           "targets": setup.targets_label, "seed": setup.seed,
                                           "layers": list(chosen), "transform": "none"}, setup.notes)
    to_stdout = args.json_out is not None and str(args.json_out) == "-"
    if to_stdout:
        print(json.dumps(data, indent=2))
    else:
        print(layers_report.table(data))
        print()
        for line in data["summary"]["findings"]:
            print(line)
        for note in data["notes"]:
            print(f"note: {note}")
        for name, why in data["skipped"].items():
            print(f"skipped {name}: {why}")
    errors = {(row["layer"], probe): error for row in data["layers"] for probe, error in row["errors"].items()}
    for (layer, probe), error in errors.items():
        print(f"embwarden: layer {layer}: {probe} failed: {error}", file=sys.stderr)
    where = sys.stderr if to_stdout else sys.stdout
    if args.json_out is not None and not to_stdout:
        path = Path(args.json_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n")
        print(f"written to {path}", file=where)
    if args.report is not None:
        print(f"report: {layers_report.write_html(data, args.report)}", file=where)
    n = len(data["layers"])
    print(f"{n} layer{'s' if n != 1 else ''} in {data['timings']['total_seconds']:.1f} s "
          f"(encoding {data['timings']['encode_seconds']:.1f} s, {data['forward_passes']} model runs)", file=where)
    return 1 if errors else 0


def _refuse(given: list[str], why: str) -> None:
    if given:
        raise ConfigError(f"audit --layers: {', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply: {why}")


def _no_transform(args: argparse.Namespace) -> None:
    _refuse([flag for flag, value in (("--transform", args.transform), ("--noise-sigma", args.noise_sigma or None),
                                      ("--naive", args.naive or None)) if value is not None],
            "a layer audit attacks the encoder's hidden states, without a transform")


def _params(args: argparse.Namespace, base: dict | None = None) -> dict:
    from audits.probes import PROBES

    given = args.params or {}
    bad = sorted(set(given) - set(PROBES))
    if bad:
        raise ConfigError(f"--params: unknown probe(s) {bad}; expected some of {sorted(PROBES)}")
    params = {name: dict(p or {}) for name, p in (base or {}).items()}
    for name, p in given.items():
        if not isinstance(p, dict):
            raise ConfigError(f"--params: {name}: expected an object of parameters, found {type(p).__name__}")
        params[name] = {**params.get(name, {}), **p}
    return params


def _seed(seed: int) -> int:
    if not 0 <= seed < 2**32:
        raise ConfigError(f"--seed: expected an integer from 0 to {2**32 - 1}, found {seed}")
    return seed


def from_directory(args: argparse.Namespace) -> LayerSetup:
    """`--encoder DIR --aux ... [--targets ...]`: a model directory, before it is deployed."""
    from audits.encoders import resolve_model_dir
    from monitors.cli.audit import attacker_corpus

    missing = [flag for flag, value in (("--encoder", args.encoder), ("--aux", args.aux)) if value is None]
    if missing:
        raise ConfigError(f"audit --layers: {', '.join(missing)} required (or --deployment NAME for a deployment's "
                          "version)")
    _refuse([flag for flag, value in (("--version", args.version), ("--version-spec", args.version_spec))
             if value is not None], "they go with --deployment")
    _no_transform(args)
    if str(args.encoder).startswith(("http://", "https://")):
        raise ConfigError(f"audit --layers: --encoder {args.encoder} is an HTTP embedding API: its layers are out of "
                          "reach; give a local Hugging Face model directory (or bundled:all-MiniLM-L6-v2)")
    seed = _seed(args.seed)
    encoder = LocalEncoder(resolve_model_dir(args.encoder))
    params = _params(args)
    aux = attacker_corpus(args.aux, seed, args.cache)
    targets, label, synthetic = _targets(args.targets)
    return LayerSetup(encoder, str(args.encoder), aux, str(args.aux), targets, label, synthetic, seed, args.cache,
                      params)


def _targets(spec: Path | str | None) -> tuple[corpora.Corpus, str, bool]:
    """`--targets`: a JSONL or Parquet file, or `canaries[:COUNT]` (the default: 200 synthetic canaries)."""
    text = None if spec is None else str(spec)
    if text is None or (text.partition(":")[0] == "canaries" and not Path(text).exists()):
        size = (text or "").partition(":")[2]
        try:
            count = int(size) if size else DEFAULT_CANARIES
        except ValueError:
            raise ConfigError(f"--targets {text}: expected canaries:COUNT with a whole number, "
                              f"found {size!r}") from None
        if not 2 <= count <= 100_000:
            raise ConfigError(f"--targets {text}: expected from 2 to 100000 canaries, found {count}")
        return corpora.canaries(count, CANARY_SEED), f"synthetic canaries (seed {CANARY_SEED})", True
    return corpora.read_file(Path(text)), Path(text).name, False


def from_deployment(args: argparse.Namespace) -> LayerSetup:
    """`--deployment NAME [--version V]`: the version's encoder (a local one), the deployment's public
    attacker's corpus, canaries and probe settings. Its transform is not applied, and the output says so."""
    from audits.encoders import build_encoder
    from monitors import auxiliary_corpus
    from monitors.candidates import with_version
    from monitors.config import load_config, uses_production
    from monitors.deployments import auditor_seed, version_config

    _refuse([flag for flag, value in (("--encoder", args.encoder), ("--aux", args.aux), ("--targets", args.targets))
             if value is not None], "with --deployment the encoder, the attacker's corpus and the canaries come "
                                    "from embwarden.yaml")
    _no_transform(args)
    config = load_config(args.config)
    dep_cfg = config.deployment(args.deployment)
    version = args.version or ("candidate" if args.version_spec else dep_cfg.active_version)
    if args.version_spec:
        config = with_version(config, args.deployment, version, args.version_spec)
        dep_cfg = config.deployment(args.deployment)
    if version not in dep_cfg.versions:
        raise ConfigError(f"deployments.{args.deployment}.versions: no version {version!r}; "
                          f"it has {sorted(dep_cfg.versions)}")
    vcfg = version_config(config, args.deployment, version)
    if vcfg.encoder.kind != "local":
        raise ConfigError(f"audit --layers: {args.deployment} {version} embeds through an HTTP API (encoder kind "
                          f"{vcfg.encoder.kind}): its layers are out of reach. A layer audit needs a local Hugging "
                          "Face model directory (encoder kind local).")
    encoder = build_encoder(vcfg.encoder, config.base_dir)
    assert isinstance(encoder, LocalEncoder)   # kind local, checked above
    notes = []
    spec = vcfg.transform.spec()
    if spec.get("kind", "none") != "none":
        described = " ".join([str(spec["kind"]), *(f"{k}={v}" for k, v in spec.items()
                                                   if k not in ("kind", "artifact", "sha256"))])
        notes.append(f"{args.deployment} {version}'s transform ({described}) is not applied here: the layers are "
                     "attacked as the encoder computes them, before any transform; `embwarden audit --deployment` "
                     "measures the version with it.")
    aux = auxiliary_corpus.public_corpus(config, args.deployment)
    if uses_production(dep_cfg.auxiliary_corpus):
        notes.append("The attacker's production slice exists only inside audit runs: the layers' attackers trained "
                     "on the configured public corpus without it.")
    count, seed = (dep_cfg.canaries.count, dep_cfg.canaries.seed) if dep_cfg.canaries.count \
        else (DEFAULT_CANARIES, CANARY_SEED)
    if not dep_cfg.canaries.count:
        notes.append(f"Canaries are off for {args.deployment} (count 0): {count} canaries of seed {seed} were used.")
    params = _params(args, {name: p for name, p in dep_cfg.probes.items()})
    return LayerSetup(encoder, f"{args.deployment} {version} ({vcfg.encoder.model})", aux,
                      f"the {args.deployment} attacker's corpus", corpora.canaries(count, seed),
                      f"synthetic canaries (seed {seed})", True, auditor_seed(config, args.deployment),
                      config.cache_root, params, notes)
