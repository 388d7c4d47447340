"""Login, approval (with patient picker) and error pages. Jinja autoescaping is on."""

from __future__ import annotations

from typing import Any

from flask import render_template_string

_LAYOUT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem}
label{display:block;margin:.6rem 0 .2rem}input[type=text],input[type=password]{width:100%}
.error{color:#a00}li{margin:.2rem 0}button{margin-right:.5rem}</style></head>
<body><h1>{{ title }}</h1>{{ body|safe }}</body></html>"""

_LOGIN = """{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
<form method="post" action="{{ action }}">
<input type="hidden" name="next" value="{{ next }}">
<label for="username">Username</label><input id="username" name="username" type="text"
 autocomplete="username" required>
<label for="password">Password</label><input id="password" name="password" type="password"
 autocomplete="current-password" required>
<p><button type="submit">Sign in</button></p></form>"""

_APPROVE = """<p><strong>{{ client }}</strong> asks for access as <strong>{{ user }}</strong>
({{ organization }}):</p><ul>{% for s in scopes %}<li><code>{{ s }}</code></li>{% endfor %}</ul>
{% if needs_patient %}
<form method="get" action="{{ action_continue }}"><input type="hidden" name="rid" value="{{ rid }}">
<label for="q">Find patient</label><input id="q" name="q" type="text" value="{{ q }}">
<button type="submit">Search</button></form>
{% if patients %}<form method="post" action="{{ action }}">
<input type="hidden" name="rid" value="{{ rid }}">
<input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="q" value="{{ q }}">
<fieldset><legend>Patient</legend>{% for p in patients %}
<label><input type="radio" name="patient" value="{{ p.id }}" required> {{ p.display }}
{% if p.birthDate %}({{ p.birthDate }}){% endif %}</label>{% endfor %}</fieldset>
<p><button name="decision" value="approve">Allow</button>
<button name="decision" value="deny" formnovalidate>Deny</button></p></form>
{% elif q %}<p>No patient found.</p>{% endif %}
{% else %}
<form method="post" action="{{ action }}"><input type="hidden" name="rid" value="{{ rid }}">
<input type="hidden" name="csrf" value="{{ csrf }}">
{% if patient %}<p>Patient in context: <code>Patient/{{ patient }}</code></p>{% endif %}
<p><button name="decision" value="approve">Allow</button>
<button name="decision" value="deny">Deny</button></p></form>{% endif %}"""


def page(title: str, template: str, **values: Any) -> str:
    """Render `template` inside the common layout."""
    body = render_template_string(template, **values)
    return render_template_string(_LAYOUT, title=title, body=body)


def login_page(action: str, next_url: str, error: str | None = None) -> str:
    return page("Sign in", _LOGIN, action=action, next=next_url, error=error)


def approval_page(**values: Any) -> str:
    return page("Authorize application", _APPROVE, **values)


def error_page(error: str, description: str) -> str:
    return page("Authorization error", "<p class='error'>{{ e }}: {{ d }}</p>",
                e=error, d=description)
