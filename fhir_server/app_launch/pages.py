"""The app's HTML pages (Jinja, autoescaped): the referral page and the error page."""

from __future__ import annotations

from typing import Any

from flask import Response, render_template_string

from fhir_server.app_launch.summary import PRIORITIES

_HEAD = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{{ title }}</title><meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:system-ui,sans-serif;max-width:44rem;margin:2rem auto;padding:0 1rem}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}
.error{color:#a00}.ok{color:#060}label{display:block;margin-top:.8rem}</style></head><body>"""

_REFERRAL = _HEAD + """
<h1>Mental-health referral</h1>
<section id="patient"><h2>Patient</h2>
<p><strong id="patient-name">{{ patient.name }}</strong>,
born <span id="birth-date">{{ patient.birthDate }}</span></p>
<p>EHR: <code>{{ iss }}</code></p></section>
<section id="scores"><h2>Latest screening scores</h2>
{% if scores %}<table><tr><th>Instrument</th><th>Score</th><th>Date</th><th>Severity</th></tr>
{% for s in scores %}<tr class="score"><td>{{ s.instrument }}</td><td>{{ s.score }}</td>
<td>{{ s.date }}</td><td>{{ s.band }}</td></tr>{% endfor %}</table>
{% else %}<p>No PHQ-9 or GAD-7 result is recorded in the EHR.</p>{% endif %}</section>
{% for r in referrals %}<p class="ok">Referral created in the EHR:
<code class="created">ServiceRequest/{{ r.id }}</code> ({{ r.priority }})</p>{% endfor %}
{% if message %}<p class="error" role="alert">{{ message }}</p>{% endif %}
<section id="refer"><h2>Create referral</h2>
<form method="post" action="{{ action }}">
<input type="hidden" name="csrf" value="{{ csrf }}">
<label for="reason">Reason for referral</label>
<textarea id="reason" name="reason" rows="4" cols="60" maxlength="1000" required></textarea>
<label for="priority">Priority</label>
<select id="priority" name="priority">{% for p in priorities %}
<option value="{{ p }}">{{ p }}</option>{% endfor %}</select>
<p><button type="submit">Create referral in the EHR</button></p></form></section>
</body></html>"""

_ERROR = _HEAD + """<h1>{{ title }}</h1><p class="error" role="alert">{{ message }}</p>
<p>Start the app again from the EHR.</p></body></html>"""


def referral_page(launch_id: str, iss: str, data: dict[str, Any], message: str = "",
                  status: int = 200) -> Response:
    """The referral page of one launch: patient, latest scores, and the referral form."""
    html = render_template_string(
        _REFERRAL, title="Referral", patient=data.get("patient", {}), iss=iss,
        scores=[s for s in data.get("scores", []) if s], referrals=data.get("referrals", []),
        csrf=data.get("csrf", ""), action=f"/app/referral/{launch_id}", message=message,
        priorities=PRIORITIES)
    return _html(html, status)


def error_page(status: int, message: str) -> Response:
    """A plain error page (400 for a bad request, 502 for a failure at the EHR)."""
    title = "The EHR could not be reached or refused" if status == 502 else "Launch refused"
    return _html(render_template_string(_ERROR, title=title, message=message), status)


def _html(html: str, status: int) -> Response:
    response = Response(html, status=status, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")
    return response
