"""Pure units: Settings (URL schemes, environment, validation, frozen, the password never
shown). No Redis is needed."""

from __future__ import annotations

import dataclasses

import pytest

from lb.broker import BadInput, Settings

# -------------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://h",
        "rediss://user:pw@h:6380/2",
        "unix:///tmp/redis.sock",
        "unix:///tmp/redis.sock?db=3",
    ],
)
def test_settings_accepts_redis_urls(url: str) -> None:
    """redis://, rediss:// and unix:// URLs are accepted and kept."""
    s = Settings.from_url(url, prefix="p")
    assert s.url == url
    assert s.prefix == "p"


@pytest.mark.parametrize(
    "url", ["http://h:6379", "https://h", "localhost:6379", "ftp://x", "file:///tmp/x", "tcp://h"]
)
def test_settings_refuses_other_schemes(url: str) -> None:
    """Any other scheme is refused with BadInput."""
    with pytest.raises(BadInput):
        Settings.from_url(url)


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a URL, $LB_REDIS_URL and $LB_PREFIX are used; then the local default."""
    monkeypatch.setenv("LB_REDIS_URL", "redis://envhost:1234/5")
    monkeypatch.setenv("LB_PREFIX", "envp")
    s = Settings.from_url()
    assert (s.url, s.prefix) == ("redis://envhost:1234/5", "envp")
    monkeypatch.delenv("LB_REDIS_URL")
    monkeypatch.delenv("LB_PREFIX")
    s = Settings.from_url()
    assert (s.url, s.prefix) == ("redis://127.0.0.1:6379/0", "lb")


@pytest.mark.parametrize(
    "overrides",
    [
        {"prefix": "a b"},
        {"prefix": "{p}"},
        {"prefix": "p:q"},
        {"prefix": "x" * 65},
        {"shards": 0},
        {"shards": 1025},
        {"max_payload": 63},
        {"ttl_ms": 199},
    ],
    ids=str,
)
def test_settings_validation(overrides: dict) -> None:
    """Bad prefix, shard count, payload limit or ttl is refused with BadInput."""
    with pytest.raises(BadInput):
        Settings.from_url("redis://h", **overrides)
    with pytest.raises(BadInput):
        Settings.from_url("redis://h").with_(**overrides)


def test_settings_is_frozen() -> None:
    """Settings cannot be changed in place (safe to share between threads)."""
    s = Settings.from_url("redis://h")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.prefix = "other"  # type: ignore[misc]


SECRET = "s3cr3t-PaSS"


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{SECRET}@h:6379/0",
        f"redis://user:{SECRET}@h/0",
        f"rediss://user:{SECRET}@h:6380/1",
        f"unix://:{SECRET}@/tmp/r.sock",
    ],
)
def test_settings_never_show_password(url: str) -> None:
    """repr, str, safe_url (and repr of a modified copy) never contain the password."""
    s = Settings.from_url(url, prefix="p")
    shown = [repr(s), str(s), s.safe_url, f"{s}", repr(s.with_(prefix="q")), repr([s])]
    for text in shown:
        assert SECRET not in text, text
    assert "***" in s.safe_url
    assert s.url == url  # the real URL is still there for connecting


@pytest.mark.parametrize(
    "url", [f"unix:///tmp/r.sock?password={SECRET}", f"redis://h:6379/0?password={SECRET}"]
)
def test_settings_hide_password_in_query(url: str) -> None:
    """A password passed in the query string is hidden too."""
    s = Settings.from_url(url)
    for text in (repr(s), str(s), s.safe_url):
        assert SECRET not in text, text
