"""`feedpub check`: every problem of a site in one run, one line each, naming file and line."""

from __future__ import annotations

import re

from click.testing import CliRunner

from feedpub.cli import main

KEY = {"FEEDPUB_SECRET_KEY": "k" * 40}


def check(site_dir, env=KEY):
    result = CliRunner().invoke(main, ["check", "--site", str(site_dir)], env=env, catch_exceptions=False)
    return result.exit_code, result.output


def edit(path, old, new):
    path.write_text(path.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")


def test_a_clean_site_is_all_clean(site_dir):
    assert check(site_dir) == (0, "all clean\n")


def test_five_settings_mistakes_in_one_run(site_dir):
    settings = site_dir / "feedpub.yaml"
    edit(settings, "items: 20", "items: many")
    edit(settings, "tag_feeds: true", "tag_feeds: maybe")
    edit(settings, "timezone: Europe/Paris", "timezone: Nowhere/City")
    edit(settings, "output: public", "output: public\ncolour: blue\nemail:\n  smtp:\n    host: h\n    port: x\n")
    code, output = check(site_dir)
    lines = settings.read_text(encoding="utf-8").splitlines()
    line = {key: next(i + 1 for i, text in enumerate(lines) if text.lstrip().startswith(key + ":"))
            for key in ("items", "tag_feeds", "timezone", "colour", "port")}
    assert code == 1
    for expected in (
        f"error: feedpub.yaml:{line['items']}: feeds.items: 'many' is not a whole number",
        f"error: feedpub.yaml:{line['tag_feeds']}: feeds.tag_feeds: 'maybe' is not true or false",
        f"error: feedpub.yaml:{line['timezone']}: timezone: 'Nowhere/City' is not a known time zone",
        f"error: feedpub.yaml:{line['colour']}: colour: unknown setting",
        f"error: feedpub.yaml:{line['port']}: email.smtp.port: 'x' is not a whole number",
    ):
        assert expected + "\n" in output
    assert output.endswith("5 errors, 0 warnings\n") and "Traceback" not in output
    reported = [int(n) for n in re.findall(r"^error: feedpub\.yaml:(\d+):", output, re.M)]
    assert reported == sorted(line.values()), "in the order of the file"


def test_schedule_yaml_error_names_its_line(site_dir):
    (site_dir / "schedule.yaml").write_text("timezone: UTC\ndigests:\n  weekly: [oops\n", encoding="utf-8")
    code, output = check(site_dir)
    assert code == 1 and "error: schedule.yaml:3: not valid YAML" in output


def test_each_bad_cron_field_and_time_zone(site_dir):
    schedule = site_dir / "schedule.yaml"
    edit(schedule, 'cron: "0 9 * * 1"', 'cron: "61 9 * * 1"')
    edit(schedule, "timezone: Europe/Paris", "timezone: Nowhere/City")
    code, output = check(site_dir)
    lines = schedule.read_text(encoding="utf-8").splitlines()
    cron = next(i + 1 for i, text in enumerate(lines) if "61 9" in text)
    tz = next(i + 1 for i, text in enumerate(lines) if "Nowhere" in text)
    assert code == 1
    assert (f"error: schedule.yaml:{cron}: digests.weekly.cron: '61 9 * * 1': minute field '61': "
            "the last value (61) is higher than the maximum value (59)\n") in output
    assert f"error: schedule.yaml:{tz}: timezone: 'Nowhere/City' is not a known time zone\n" in output


def test_an_undefined_name_in_a_template_is_caught_by_check_and_build(site_dir):
    template = site_dir / "templates" / "article.html.j2"
    edit(template, "<h1>{{ article.title }}", "<h1>{{ nope.nope }}")
    line = next(i + 1 for i, text in enumerate(template.read_text().splitlines()) if "nope" in text)
    code, output = check(site_dir)
    assert code == 1 and f"error: templates/article.html.j2:{line}: 'nope' is undefined\n" in output
    assert output.count("'nope' is undefined") == 1
    result = CliRunner().invoke(main, ["build", "--site", str(site_dir)])
    assert result.exit_code == 1
    assert result.output == f"Error: templates/article.html.j2:{line}: 'nope' is undefined\n"


def test_a_bad_subject_is_caught_by_check_and_preview(site_dir):
    schedule = site_dir / "schedule.yaml"
    edit(schedule, 'subject: "{{ site.title }} — la semaine du {{ date }}"', 'subject: "{{ nope.x }}"')
    line = next(i + 1 for i, text in enumerate(schedule.read_text().splitlines()) if "nope" in text)
    code, output = check(site_dir)
    assert code == 1 and f"error: schedule.yaml:{line}: digests.weekly.subject: 'nope' is undefined\n" in output
    result = CliRunner().invoke(main, ["digest", "weekly", "--preview", "--site", str(site_dir)])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == "Error: schedule.yaml: digests.weekly.subject: 'nope' is undefined"
    assert "Traceback" not in result.output


def test_mail_needs_a_key_a_real_from_and_https(site_dir):
    settings = site_dir / "feedpub.yaml"
    edit(settings, "http://127.0.0.1:8080/", "http://news.acme.test/")
    edit(settings, "email: redaction@ia-insights.example.org", "name: x")
    settings.write_text(settings.read_text() + "email:\n  outbox: outbox\n", encoding="utf-8")
    lines = settings.read_text(encoding="utf-8").splitlines()
    base = next(i + 1 for i, text in enumerate(lines) if text.startswith("base_url"))
    block = next(i + 1 for i, text in enumerate(lines) if text.startswith("email:"))
    code, output = check(site_dir, env={"FEEDPUB_SECRET_KEY": ""})
    assert code == 1
    assert "error: FEEDPUB_SECRET_KEY is not set" in output
    assert f"error: feedpub.yaml:{block}: email.from: 'newsletter@localhost' is not on a real domain" in output
    assert (f"error: feedpub.yaml:{base}: base_url: 'http://news.acme.test/': one-click unsubscribe "
            "needs https\n") in output


def test_plain_text_subject_of_a_title_with_an_ampersand(site_dir):
    import email
    import email.policy

    from lxml import html

    edit(site_dir / "feedpub.yaml", "title: IA-insights", "title: \"Tom & Jerry's Notes\"")
    result = CliRunner().invoke(main, ["digest", "weekly", "--preview", "--site", str(site_dir)])
    assert result.exit_code == 0, result.output
    folder = site_dir / "state" / "preview" / "weekly"
    message = email.message_from_bytes((folder / "issue.eml").read_bytes(), policy=email.policy.default)
    assert message["Subject"].startswith("Tom & Jerry's Notes — la semaine du ")
    title = html.fromstring((folder / "issue.html").read_bytes()).findtext(".//title")
    assert title.startswith("Tom & Jerry's Notes — ")
