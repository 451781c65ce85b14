"""The follow-up messages owed to reporters, in English and French, shipped as data.

``FollowUpRequested`` names a template id (``not_illegal.en``...), never the text and never a contact
detail: the follow-up step decrypts the contact and renders ``messages/followup.csv``. The only
placeholder a template may use is ``{report_number}``.
"""

from __future__ import annotations

import csv
import string
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.route.logic import template_ids

MESSAGES_FILE = Path(__file__).resolve().parent / "messages" / "followup.csv"
PLACEHOLDERS = frozenset({"report_number"})


@dataclass(frozen=True, kw_only=True, slots=True)
class Template:
    template_id: str
    kind: str
    language: str
    subject: str
    body: str

    def render(self, *, report_number: str) -> tuple[str, str]:
        """The subject and body for one report."""
        return self.subject.format(report_number=report_number), self.body.format(report_number=report_number)


def load_templates(path: Path = MESSAGES_FILE) -> dict[str, Template]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror}).") from exc
    found: dict[str, Template] = {}
    for line, row in enumerate(rows, start=2):
        template = Template(
            template_id=(row.get("template_id") or "").strip(),
            kind=(row.get("kind") or "").strip(),
            language=(row.get("language") or "").strip(),
            subject=row.get("subject") or "",
            body=row.get("body") or "",
        )
        if not template.template_id.endswith(f".{template.language}") or template.language not in (
            "en",
            "fr",
        ):
            raise ConfigError(f"{path} line {line}: template id and language (en or fr) do not agree.")
        for text in (template.subject, template.body):
            names = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
            if not names <= PLACEHOLDERS:
                raise ConfigError(
                    f"{path} line {line}: unknown placeholder(s) {sorted(names - PLACEHOLDERS)}."
                )
        found[template.template_id] = template
    return found


def check_templates(path: Path = MESSAGES_FILE) -> None:
    """Refuse to start when a template the rules can name is missing."""
    missing = sorted(set(template_ids()) - set(load_templates(path)))
    if missing:
        raise ConfigError(f"{path}: missing follow-up template(s) {', '.join(missing)}.")
