"""The Jinja mlfleet evaluates in inventory settings (controller/templating.py), and what it
refuses, named."""

from __future__ import annotations

import pytest

from mlfleet.controller.templating import TemplateUnsupported, UnsafeText, evaluate, is_template

VARS = {"site": "lyon", "port": 2222, "gw": "{{ site }}-gw", "loop": "{{ loop }}", "empty": ""}
ENV = {"DEPLOY_USER": "deploy"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ site }}", "lyon"),
        ("{{site}}.example.com", "lyon.example.com"),
        ("{{ port }}", "2222"),
        ("{{ gw }}.example.com", "lyon-gw.example.com"),  # a variable that is a template
        ("{{ inventory_hostname }}", "web1"),
        ("{{ lookup('env', 'DEPLOY_USER') }}", "deploy"),
        ('{{ lookup("env","DEPLOY_USER") }}', "deploy"),
        ("{{ lookup('env', 'UNSET') }}", ""),  # as Ansible's env lookup
        ("{{ nope | default('x') }}", "x"),
        ("{{ empty | default('x') }}", ""),
        ("{{ empty | default('x', true) }}", "x"),
        ("{{ lookup('env', 'UNSET') | d('root', True) }}", "root"),
        ("no template", "no template"),
    ],
)
def test_what_is_evaluated(text: str, expected: str) -> None:
    assert evaluate(text, VARS, "web1", ENV) == expected


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("{{ nope }}", "{{ nope }} uses nope, which is not defined"),
        ("{{ ansible_playbook_python }}", "uses ansible_playbook_python, which is not defined"),
        ("{{ lookup('file', '/etc/passwd') }}", "lookup('file', ...) is not evaluated"),
        ("{{ site | upper }}", "is not evaluated"),
        ("{{ port + 1 }}", "is not evaluated"),
        ("{% if x %}a{% endif %}", "Jinja statements"),
        ("{{ loop }}", "more than 10 deep"),
    ],
)
def test_what_is_refused_names_the_expression(text: str, said: str) -> None:
    with pytest.raises(TemplateUnsupported) as err:
        evaluate(text, VARS, "web1", ENV)
    assert said in str(err.value)


def test_unsafe_text_is_never_a_template() -> None:
    assert is_template("{{ x }}") and not is_template(UnsafeText("{{ x }}"))
    assert not is_template(12) and not is_template("plain")
