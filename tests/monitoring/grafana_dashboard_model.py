"""A strict model of the Grafana dashboard JSON that schemaVersion 39 (Grafana 10.3 - 11.x) reads.

No JSON schema of Grafana dashboards is published on PyPI or npm (`@grafana/schema` ships TypeScript
types; `grafana-foundation-sdk` builds dashboards without validating them), so this module writes down
what Grafana's dashboard kind (schema v0, schemaVersion 39) requires of the fields our dashboards use:
pydantic models that forbid unknown fields, plus the cross-field rules Grafana relies on (unique panel
ids, panels inside the 24-column grid without overlap, variables defined before use, datasource
references that resolve).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 39
GRID_COLUMNS = 24
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__from", "__to"}
VARIABLE_REFERENCE = re.compile(r"\$\{?(\w+)(?::\w+)?\}?|\[\[(\w+)\]\]")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class DataSourceRef(Strict):
    type: str
    uid: str


class GridPos(Strict):
    h: Annotated[int, Field(ge=1)]
    w: Annotated[int, Field(ge=1, le=GRID_COLUMNS)]
    x: Annotated[int, Field(ge=0, lt=GRID_COLUMNS)]
    y: Annotated[int, Field(ge=0)]

    @model_validator(mode="after")
    def inside_the_grid(self) -> GridPos:
        if self.x + self.w > GRID_COLUMNS:
            raise ValueError(f"x + w = {self.x + self.w} exceeds the {GRID_COLUMNS}-column grid")
        return self

    def cells(self) -> set[tuple[int, int]]:
        return {(x, y) for x in range(self.x, self.x + self.w) for y in range(self.y, self.y + self.h)}


class PrometheusTarget(Strict):
    refId: Annotated[str, Field(pattern=r"^[A-Z]+$")]  # noqa: N815 - Grafana's field name
    datasource: DataSourceRef
    expr: Annotated[str, Field(min_length=1)]
    legendFormat: str  # noqa: N815
    editorMode: Literal["code", "builder"] | None = None  # noqa: N815
    range: bool | None = None
    instant: bool | None = None


class FieldConfig(Strict):
    defaults: dict[str, Any]
    overrides: list[dict[str, Any]]


class RowPanel(Strict):
    type: Literal["row"]
    id: Annotated[int, Field(ge=1)]
    title: str
    collapsed: bool
    gridPos: GridPos  # noqa: N815
    panels: list[dict[str, Any]]

    @model_validator(mode="after")
    def full_width(self) -> RowPanel:
        if self.gridPos.w != GRID_COLUMNS or self.gridPos.h != 1 or self.gridPos.x != 0:
            raise ValueError("a row spans the whole grid: gridPos w=24, h=1, x=0")
        return self


class Panel(Strict):
    type: Literal["timeseries", "stat", "gauge", "bargauge", "table", "text", "heatmap", "state-timeline"]
    id: Annotated[int, Field(ge=1)]
    title: Annotated[str, Field(min_length=1)]
    description: str | None = None
    datasource: DataSourceRef
    gridPos: GridPos  # noqa: N815
    fieldConfig: FieldConfig  # noqa: N815
    options: dict[str, Any]
    targets: Annotated[list[PrometheusTarget], Field(min_length=1)]

    @model_validator(mode="after")
    def unique_ref_ids(self) -> Panel:
        ref_ids = [t.refId for t in self.targets]
        if len(ref_ids) != len(set(ref_ids)):
            raise ValueError(f"panel {self.title!r}: duplicate refId in {ref_ids}")
        return self


class VariableQuery(Strict):
    query: str
    refId: str  # noqa: N815


class Variable(Strict):
    type: Literal["query", "datasource", "custom", "constant", "interval", "textbox", "adhoc"]
    name: Annotated[str, Field(pattern=r"^\w+$")]
    label: str | None = None
    hide: Literal[0, 1, 2]
    skipUrlSync: bool  # noqa: N815
    query: str | VariableQuery
    datasource: DataSourceRef | None = None
    definition: str | None = None
    current: dict[str, Any]
    options: list[dict[str, Any]]
    includeAll: bool  # noqa: N815
    multi: bool
    allValue: str | None = None  # noqa: N815
    refresh: Literal[0, 1, 2] | None = None
    regex: str | None = None
    sort: Annotated[int, Field(ge=0, le=8)] | None = None

    @model_validator(mode="after")
    def datasource_rules(self) -> Variable:
        if self.type == "query" and self.datasource is None:
            raise ValueError(f"query variable {self.name!r} needs a datasource")
        if self.type == "datasource" and not isinstance(self.query, str):
            raise ValueError(f"datasource variable {self.name!r}: query is the plugin id, e.g. 'prometheus'")
        return self


class Templating(Strict):
    list: list[Variable]


class Annotation(Strict):
    builtIn: Literal[0, 1]  # noqa: N815
    datasource: DataSourceRef
    enable: bool
    hide: bool
    iconColor: str  # noqa: N815
    name: str
    type: Literal["dashboard"]


class Annotations(Strict):
    list: list[Annotation]


class TimeRange(Strict):
    from_: Annotated[str, Field(alias="from")]
    to: str


class Dashboard(Strict):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    annotations: Annotations
    description: str | None = None
    editable: bool
    fiscalYearStartMonth: Annotated[int, Field(ge=0, le=11)]  # noqa: N815
    graphTooltip: Literal[0, 1, 2]  # noqa: N815
    id: int | None
    links: list[dict[str, Any]]
    panels: list[RowPanel | Panel]
    refresh: str | Literal[False]
    schemaVersion: Literal[39]  # noqa: N815
    tags: list[str]
    templating: Templating
    time: TimeRange
    timepicker: dict[str, Any]
    timezone: str
    title: Annotated[str, Field(min_length=1)]
    uid: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,40}$")]
    version: int
    weekStart: str  # noqa: N815

    @model_validator(mode="after")
    def consistent(self) -> Dashboard:
        ids = [p.id for p in self.panels]
        if len(ids) != len(set(ids)):
            raise ValueError(f"panel ids are not unique: {sorted(ids)}")
        taken: dict[tuple[int, int], str] = {}
        for panel in self.panels:
            for cell in panel.gridPos.cells():
                if cell in taken:
                    raise ValueError(f"panels {taken[cell]!r} and {panel.title!r} overlap at {cell}")
                taken[cell] = panel.title
        defined = {v.name for v in self.templating.list}
        datasource_variables = {v.name for v in self.templating.list if v.type == "datasource"}
        for text in self._texts_with_references():
            for match in VARIABLE_REFERENCE.finditer(text):
                name = match.group(1) or match.group(2)
                if name not in defined and name not in BUILTIN_VARIABLES:
                    raise ValueError(f"{text!r} uses ${name}, which is neither defined nor built in")
        for ref in self._datasource_refs():
            reference = VARIABLE_REFERENCE.fullmatch(ref.uid)
            if reference and (reference.group(1) or reference.group(2)) not in datasource_variables:
                raise ValueError(f"datasource uid {ref.uid!r} names no datasource variable")
        return self

    def _texts_with_references(self) -> list[str]:
        texts = [t.expr for p in self.panels if isinstance(p, Panel) for t in p.targets]
        for v in self.templating.list:
            texts.append(v.query if isinstance(v.query, str) else v.query.query)
        return texts

    def _datasource_refs(self) -> list[DataSourceRef]:
        refs = [p.datasource for p in self.panels if isinstance(p, Panel)]
        refs += [t.datasource for p in self.panels if isinstance(p, Panel) for t in p.targets]
        refs += [v.datasource for v in self.templating.list if v.datasource is not None]
        return refs
