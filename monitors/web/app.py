"""The Airflow plugin's FastAPI app: embwarden's ledger as pages and a JSON API, mounted at /embwarden.

Every route requires an authenticated Airflow user (see monitors.web.auth); writes go through
monitors.thresholds.set_threshold and monitors.gates.change only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field, field_validator

from audits import storage
from audits.errors import ConfigError, EmbwardenError
from audits.params import Bool
from monitors import gates, targets, thresholds
from monitors.config import load_config
from monitors.config.base import Float
from monitors.config.deployment import stored_location
from monitors.ledger.database import session_scope
from monitors.ledger.models import Deployment
from monitors.reports import plain_words
from monitors.thresholds import all_metric_ranges
from monitors.web import queries
from monitors.web.auth import LoginRequired, api_user, gate_reader, login_url, may_write, page_user, user_name, writer

HERE = Path(__file__).parent
PREFIX = "/embwarden"
templates = Jinja2Templates(directory=str(HERE / "templates"))

def _no_nul_in_url(request: Request) -> None:
    """A NUL character in the path or the query cannot name anything the ledger stores: 422, not a 500."""
    query = request.query_params.multi_items()
    where = ["path"] if "\x00" in request.url.path else next(
        (["query", key] for key, value in query if "\x00" in key + value), None)
    if where:
        detail = [{"loc": where, "msg": "holds a NUL character (\\u0000)", "type": "value_error"}]
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail)


app = FastAPI(title="embwarden", version="1", openapi_url=None, docs_url=None, redoc_url=None,
              dependencies=[Depends(_no_nul_in_url)],
              description="Privacy audits of text embeddings: the ledger's deployments, runs, scores, "
                          "thresholds and gates. Every route needs an Airflow user (Bearer JWT or the "
                          "`_token` cookie); writes need the admin role.")

ApiUser = Annotated[BaseUser, Depends(api_user)]
PageUser = Annotated[BaseUser, Depends(page_user)]
Writer = Annotated[BaseUser, Depends(writer)]


class _Body(BaseModel):
    """A JSON body: unknown fields refused, and no NUL character in any string (PostgreSQL refuses
    them; the user gets a 422 naming the field, not a 500)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("holds a NUL character (\\u0000), which text fields cannot store")
        return value


Level = Annotated[Float | None, Field(allow_inf_nan=False)]


class ThresholdBody(_Body):
    """Levels not given keep the value in force; a level given as null is removed."""

    metric: str = Field(min_length=1, max_length=130, description="probe.metric, e.g. bow_inversion.token_f1")
    warn: Level = None
    gate: Level = None
    rollback: Level = None
    higher_is_worse: Bool = True
    basis: Literal["value", "ci_low", "ci_high"] = "value"
    reason: str = Field(max_length=2000, description="why; recorded with the change")

    def changes(self) -> dict[str, Any]:
        """The levels this request names (JSON null included), not their defaults."""
        return self.model_dump(include=self.model_fields_set & set(thresholds.LEVEL_FIELDS))


class GateBody(_Body):
    action: Literal["close_gate", "reopen_gate", "rollback", "activate"]
    reason: str = Field(max_length=2000)
    version: str | None = Field(default=None, max_length=64)


@app.get("/openapi.json", include_in_schema=False)
def openapi_spec(user: ApiUser) -> JSONResponse:
    """The API's OpenAPI document, for Airflow users only (no Swagger page: it would need a CDN)."""
    return JSONResponse(app.openapi())


@app.exception_handler(LoginRequired)
async def _to_login(request: Request, exc: LoginRequired):
    return RedirectResponse(login_url(exc.next_url), status_code=status.HTTP_303_SEE_OTHER)


FIELDS = ("reason", "author", "actor", "version", "action", "warn", "gate", "rollback", "basis", "metric")


def _refused(message: str, metric: str | None = None) -> HTTPException:
    """A 422 naming the field of each problem: the text before the ':' of embwarden's messages."""
    details = []
    for part in message.split("; "):
        head = part.split(":", 1)[0].strip()
        if metric and head == metric:
            head = "metric"
        elif metric and head.startswith(metric + "."):
            head = head[len(metric) + 1:]
        details.append({"loc": ["body", head if head in FIELDS else "levels"], "msg": part, "type": "value_error"})
    return HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, details)


def _known(session, deployment: str) -> None:
    if session.query(Deployment.id).filter(Deployment.name == deployment).first() is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"deployment {deployment!r} is not in the ledger")


def _base(request: Request) -> str:
    """Where this app is mounted, as the browser sees it (root_path set by the mount)."""
    return request.scope.get("root_path", "").rstrip("/") or PREFIX


def _page(request: Request, name: str, user: BaseUser, **context) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"base": _base(request), "user": user_name(user),
                                                      "can_write": may_write(user), **context})


# ---- JSON API -------------------------------------------------------------------------------------

@app.get("/api/deployments", tags=["api"], summary="Every deployment: gate, active version, last verdict, worst metric")
def api_deployments(user: ApiUser) -> list[dict]:
    with session_scope() as session:
        return queries.overview(session)


@app.get("/api/runs", tags=["api"], summary="A deployment's audit runs, newest first")
def api_runs(user: ApiUser, deployment: str, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[dict]:
    with session_scope() as session:
        _known(session, deployment)
        return queries.runs(session, deployment, limit)


@app.get("/api/scores", tags=["api"], summary="Scores of a deployment's newest runs, oldest first")
def api_scores(user: ApiUser, deployment: str, metric: str | None = None,
               limit: Annotated[int, Query(ge=1, le=5000)] = 400) -> list[dict]:
    with session_scope() as session:
        _known(session, deployment)
        return queries.scores(session, deployment, metric, limit)


@app.get("/api/thresholds", tags=["api"], summary="Thresholds in force and their history (newest first)")
def api_thresholds(user: ApiUser, deployment: str) -> dict:
    with session_scope() as session:
        _known(session, deployment)
        return queries.threshold_view(session, deployment)


@app.post("/api/thresholds/{deployment}", tags=["api"], summary="Set a metric's thresholds (admin; JSON only)",
          responses={403: {"description": "not an admin"}, 415: {"description": "not a JSON body"},
                     422: {"description": "refused; the field is named"}})
def api_set_threshold(deployment: str, body: ThresholdBody, user: Writer) -> dict:
    try:
        config = load_config()
        with session_scope() as session:
            _known(session, deployment)
            change = thresholds.set_threshold(session, config, deployment, body.metric, body.changes(),
                                                 author=user_name(user), reason=body.reason)
    except thresholds.ThresholdError as exc:
        raise _refused(str(exc), body.metric) from None
    except ConfigError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    return {"deployment": change.deployment, "metric": change.metric, "version": change.version, "old": change.old,
            "new": change.new, "author": change.author, "reason": change.reason,
            "created_at": change.created_at.isoformat()}


def _axis(bounds: tuple[float, float | None] | None) -> list | None:
    """A chart's y range: the metric's own, a little wider so points on the edge stay visible."""
    if bounds is None or bounds[1] is None:
        return None
    low, high = bounds[0], bounds[1]
    pad = (high - low) * 0.03
    return [low - pad, high + pad]


def _gate_json(g: gates.GateStatus) -> dict:
    return {"deployment": g.deployment, "state": g.state, "reason": g.reason, "active_version": g.active_version,
            "since": g.since.isoformat() if g.since else None, "actor": g.actor}


@app.get("/api/gates/{deployment}", tags=["api"],
         summary="The gate and active version (an Airflow user, or the read-only service token)")
def api_gate(deployment: str, reader: Annotated[str, Depends(gate_reader)]) -> dict:
    with session_scope() as session:
        _known(session, deployment)
        return _gate_json(gates.status(session, deployment))


@app.post("/api/gates/{deployment}", tags=["api"],
          summary="Close or reopen the gate, roll back, or activate a version (admin; JSON only)",
          responses={403: {"description": "not an admin"}, 415: {"description": "not a JSON body"},
                     422: {"description": "refused; the field is named"}})
def api_change_gate(deployment: str, body: GateBody, user: Writer) -> dict:
    try:
        with session_scope() as session:
            _known(session, deployment)
            action = gates.change(session, deployment, body.action, body.reason, user_name(user), body.version)
            result = {"action": action.kind, "status": action.status, "actor": action.actor,
                      "detail": action.detail, "gate": _gate_json(gates.status(session, deployment))}
            action_id = action.id
    except ConfigError as exc:          # unknown version
        raise _refused(f"version: {exc}") from None
    except EmbwardenError as exc:
        raise _refused(str(exc)) from None
    # The ledger changed whatever the targets answer; a target that did not take it shows as out of sync.
    try:
        result["targets_out_of_sync"] = targets.sync_change(load_config(), action_id)
    except Exception as exc:   # the change is made: say the push failed, never answer 500 (a retry would repeat it)
        result["targets_out_of_sync"] = [f"{type(exc).__name__}: {exc}"]
    return result


# ---- pages ----------------------------------------------------------------------------------------

@app.get("/", response_class=HTMLResponse, include_in_schema=False)
def overview_page(request: Request, user: PageUser):
    with session_scope() as session:
        rows = queries.overview(session)
    return _page(request, "overview.html", user, deployments=rows)


@app.get("/metrics", response_class=HTMLResponse, include_in_schema=False)
def metrics_page(request: Request, user: PageUser):
    """What each metric measures, and what "sample", "canaries" and "not judged" mean."""
    return _page(request, "metrics.html", user, glossary=plain_words.GLOSSARY, targets=plain_words.TARGETS)


@app.get("/deployments/{deployment}", response_class=HTMLResponse, include_in_schema=False)
def deployment_page(request: Request, deployment: str, user: PageUser):
    with session_scope() as session:
        _known(session, deployment)
        gate = _gate_json(gates.status(session, deployment))
        score_rows = queries.scores(session, deployment, limit=400)
        effective = thresholds.effective(session, deployment)
        dep = session.query(Deployment).filter(Deployment.name == deployment).one()
        target = gates.last_passing_version(session, dep, dep.active_version_id)
        data = {"gate": gate, "versions": queries.versions(session, deployment),
                "rollback_to": target.name if target else None,
                "runs": queries.runs(session, deployment, 30), "history": queries.gate_history(session, deployment),
                "sync": targets.out_of_sync(session, dep)}
    series: dict[str, list] = {}
    for s in score_rows:
        if "[" in s["metric"]:
            continue   # a segment's score: in the run's report ("Leakage by segment"), not a trend chart each
        series.setdefault(s["metric"], []).append(
            {k: s[k] for k in ("audit_run_id", "finished_at", "value", "ci_low", "ci_high", "version")})
    ranges = all_metric_ranges()
    charts = [{"metric": m, "points": pts, "levels": effective.get(m), "range": _axis(ranges.get(m))}
              for m, pts in sorted(series.items())]
    return _page(request, "deployment.html", user, deployment=deployment, charts=charts, **data)


@app.get("/deployments/{deployment}/thresholds", response_class=HTMLResponse, include_in_schema=False)
def thresholds_page(request: Request, deployment: str, user: PageUser):
    with session_scope() as session:
        _known(session, deployment)
        view = queries.threshold_view(session, deployment)
    return _page(request, "thresholds.html", user, **view)


@app.get("/runs/{run_id}", response_class=HTMLResponse, include_in_schema=False)
def run_page(request: Request, run_id: int, user: PageUser):
    with session_scope() as session:
        run = queries.run_detail(session, run_id)
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"audit run {run_id} not found")
    run["report_available"] = _report_file(run["report_path"]) is not None
    return _page(request, "run.html", user, run=run)


def _report_file(path: str | None):
    """The report file if it lies under the configured artifacts root (symlinks resolved; on an object
    store, the same store and prefix), else None."""
    if not path:
        return None
    try:
        config = load_config()
        root = config.artifacts_root
        if storage.is_local(root):
            root, target = root.resolve(), Path(path).expanduser().resolve()
        else:
            target = stored_location(path)
        storage.relative(target, root)
    except (ConfigError, ValueError):
        return None
    return target if storage.exists(target) else None


@app.get("/runs/{run_id}/report", include_in_schema=False)
def run_report(run_id: int, user: PageUser):
    with session_scope() as session:
        run = queries.run_detail(session, run_id)
    target = _report_file(run["report_path"]) if run else None
    if target is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"audit run {run_id} has no report under the artifacts root")
    return Response(storage.read_bytes(target) or b"", media_type="text/html",
                    headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                                            "img-src data:; frame-ancestors 'self'"})


@app.get("/static/plotly.min.js", include_in_schema=False)
def plotly_js(user: PageUser):
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return FileResponse(path, media_type="application/javascript", headers={"Cache-Control": "private, max-age=3600"})


@app.exception_handler(EmbwardenError)
async def _embwarden_error(request: Request, exc: EmbwardenError):
    """A ledger that cannot be reached is the server's trouble (503); anything else our rules refused (409)."""
    from monitors.ledger.database import LedgerUnavailable

    code = status.HTTP_503_SERVICE_UNAVAILABLE if isinstance(exc, LedgerUnavailable) else status.HTTP_409_CONFLICT
    return JSONResponse({"detail": str(exc)}, status_code=code)
