"""Secrets by default: what is published or logged never carries a credential, whatever its name.

A value is treated as a secret unless it is known to be harmless:

- every **query-string value** and the **user info** of a URL;
- every **header** value but a few (``Accept``, ``User-Agent``, ``Range``...);
- every **storage-option** string but those of :data:`HARMLESS_KEYS` (``region``,
  ``endpoint_url``, ``anon``, ``version_id``...).

What is published (store attributes, STAC documents, the input cache's
manifests, progress events, error messages) names an input by
:func:`public_url`: the URL without user info, its query string replaced by
``#q<digest>`` so that distinct URLs stay distinct. Log records of the whole
process are cleaned of every registered secret (:func:`register_secrets`), and
:func:`redact` cleans any text. Values of fewer than 3 characters cannot be
told apart from ordinary text: they are removed with their URL, but not
searched for elsewhere.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import traceback
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "***"
# Shorter values are not searched for in text; below WHOLE_WORD_LENGTH they are matched as whole words only.
MIN_SECRET_LENGTH = 3
WHOLE_WORD_LENGTH = 8
# Storage-option keys (the last part of a nested key, or the whole dotted path) whose values are harmless.
HARMLESS_KEYS = frozenset({
    "region", "region_name", "endpoint_url", "endpoint", "anon", "use_ssl", "verify", "version_id", "version_aware",
    "requester_pays", "profile", "account_name", "project", "default_block_size", "default_cache_type",
    "default_fill_cache", "block_size", "cache_type", "skip_instance_cache", "use_listings_cache",
    "listings_expiry_time", "max_paths", "simple_links", "same_scheme", "size_policy", "timeout", "trust_env",
    "signature_version", "addressing_style", "max_pool_connections", "connect_timeout", "read_timeout",
    "asynchronous", "compression", "acl", "cache_regions", "consistency", "fixed_upload_size",
})
# Header names whose values are harmless.
HARMLESS_HEADERS = frozenset({"accept", "accept-encoding", "accept-language", "user-agent", "range", "connection",
                              "cache-control", "content-type"})
# Credentials the storage libraries read from the environment themselves.
SECRET_ENVIRONMENT = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ACCESS_KEY_ID",
                      "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CONNECTION_STRING",
                      "EARTHDATA_TOKEN", "EARTHDATA_PASSWORD", "GOOGLE_APPLICATION_CREDENTIALS_JSON")

_URL = re.compile(r"\b[a-zA-Z][\w+.-]*://[^\s'\"<>()\[\]{}]+")


def is_harmless_key(path: str) -> bool:
    """Whether the option at dotted ``path`` (``client_kwargs.region_name``) holds no secret.

    >>> is_harmless_key("client_kwargs.region_name"), is_harmless_key("pwd"), is_harmless_key("key")
    (True, False, False)
    """
    return path.lower() in HARMLESS_KEYS or path.rsplit(".", 1)[-1].lower() in HARMLESS_KEYS


def _is_headers(path: str) -> bool:
    return path.rsplit(".", 1)[-1].lower() in ("headers", "default_headers")


def url_secrets(url: str) -> set[str]:
    """The user info and every query value of ``url`` (and their decoded forms)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return set()
    found = set()
    for item in (parts.username, parts.password):
        if item:
            found.update({item, urllib.parse.unquote(item)})
    for _key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=False):
        found.add(value)
    if "=" in parts.fragment:  # tokens in fragments (OAuth)
        found.update(value for _key, value in urllib.parse.parse_qsl(parts.fragment))
    return found


def secret_values(options: Mapping[str, Any] | None = None, urls: Iterable[str] = (),
                  extra: Iterable[Any] = ()) -> set[str]:
    """The secrets in storage options (all but harmless keys), URLs (user info, query values) and ``extra``.

    >>> sorted(secret_values({"key": "AKIAEXAMPLE", "pwd": "ab1", "anon": False, "headers": {"X-Api": "h3d",
    ...                       "Accept": "json"}, "client_kwargs": {"region_name": "eu-west-1"}},
    ...                      urls=["https://user:pw9@host/a.nc?t=x7y&v=2"]))
    ['2', 'AKIAEXAMPLE', 'ab1', 'h3d', 'pw9', 'user', 'x7y']
    """
    found: set[str] = set()

    def walk(value: Any, path: str, secret: bool) -> None:
        if isinstance(value, Mapping):
            headers = _is_headers(path)
            for key, item in value.items():
                child = f"{path}.{key}" if path else str(key)
                if headers:
                    walk(item, child, str(key).lower() not in HARMLESS_HEADERS)
                else:
                    walk(item, child, not is_harmless_key(child))
        elif isinstance(value, (list, tuple, set)):
            for item in value:
                walk(item, path, secret)
        elif isinstance(value, str):
            if "://" in value:
                found.update(url_secrets(value))
            if secret:
                found.add(value)
                if " " in value:  # "Bearer abc", "Basic dXNlcjpwdw=="
                    found.add(value.split(" ", 1)[1])
        elif secret and value is not None and not isinstance(value, (bool, int, float)):
            # aiohttp.BasicAuth, botocore Credentials...: their string fields
            for attribute in ("password", "secret_key", "token", "access_key", "login"):
                item = getattr(value, attribute, None)
                if isinstance(item, str):
                    found.add(item)

    walk(dict(options or {}), "", False)
    for url in urls:
        found.update(url_secrets(url))
    found.update(value for value in extra if isinstance(value, str))
    return {value for value in found if value}


def environment_secrets() -> set[str]:
    """Credentials the storage libraries read from the environment, to keep them out of logs too."""
    return {os.environ[name] for name in SECRET_ENVIRONMENT if os.environ.get(name)}


def query_digest(query: str) -> str:
    """A short digest naming a query string without revealing it."""
    return "q" + hashlib.sha256(query.encode()).hexdigest()[:10]


def public_url(url: str) -> str:
    """How a URL is shown and recorded: no user info, the query string replaced by ``#q<digest>``.

    >>> public_url("https://user:pw@host.org/a.nc?pwd=ab1&version=2")
    'https://host.org/a.nc#q7dd4a56ab3'
    >>> public_url("s3://bucket/a.nc"), public_url("/data/a.nc")
    ('s3://bucket/a.nc', '/data/a.nc')
    """
    if "://" not in url:
        return url
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url.split("?", 1)[0].split("#", 1)[0]
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if netloc == parts.netloc and not parts.query and not parts.fragment:
        return url  # nothing to remove (and memory:///x keeps its slashes)
    fragment = query_digest(parts.query) if parts.query else ""
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query="", fragment=fragment))


def public_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Storage options safe to publish: only harmless keys and headers, URLs made public, JSON values only.

    >>> public_options({"anon": False, "key": "AKIA", "pwd": "s", "client_kwargs": {
    ...     "endpoint_url": "http://u:p@h:9000", "aws_session_token": "t"}, "headers": {"Accept": "json", "X": "1"}})
    {'anon': False, 'client_kwargs': {'endpoint_url': 'http://h:9000'}, 'headers': {'Accept': 'json'}}
    """
    def clean(value: Mapping[str, Any], path: str) -> dict[str, Any]:
        kept: dict[str, Any] = {}
        headers = _is_headers(path)
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if isinstance(item, Mapping) and not headers:
                inner = clean(item, child)
                if inner or not item:
                    kept[str(key)] = inner
                continue
            harmless = str(key).lower() in HARMLESS_HEADERS if headers else is_harmless_key(child)
            if harmless and _is_json_value(item):
                kept[str(key)] = public_url(item) if isinstance(item, str) else item
        return kept

    return clean(dict(options or {}), "")


def secret_looking_keys(options: Mapping[str, Any] | None) -> list[str]:
    """The keys (dotted paths) :func:`public_options` would leave out of ``options``: never their values.

    >>> secret_looking_keys({"anon": True, "key": "AKIA", "client_kwargs": {"aws_session_token": "t"}})
    ['key', 'client_kwargs.aws_session_token']
    """
    def dropped(given: Mapping[str, Any], kept: Mapping[str, Any], prefix: str) -> list[str]:
        found = []
        for key, value in given.items():
            if isinstance(value, Mapping) and value:
                found += dropped(value, kept.get(key) or {}, f"{prefix}{key}.")
            elif key not in kept:
                found.append(f"{prefix}{key}")
        return found

    options = dict(options or {})
    return dropped(options, public_options(options), "")


def _is_json_value(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, (list, tuple)) and all(_is_json_value(v) for v in value)


def _variants(secrets: Iterable[str]) -> set[str]:
    """A secret as it may appear in text: itself, URL-quoted, and form-quoted."""
    out = set()
    for secret in secrets:
        out.update({secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)})
    return {s for s in out if len(s) >= MIN_SECRET_LENGTH}


_KNOWN_SECRETS: set[str] = set()
_REDACTION_INSTALLED = False
_REDACTION_LOCK = threading.Lock()


def register_secrets(secrets: Iterable[str]) -> None:
    """Have every log record made in this process redacted of ``secrets`` (and of the environment's).

    Installed as a log record factory, so records of every library (fsspec logs
    URLs at debug level) are cleaned before any handler sees them; URLs in
    every record lose their query strings and user info.
    """
    global _REDACTION_INSTALLED
    new = {s for s in secrets if isinstance(s, str)} | environment_secrets()
    with _REDACTION_LOCK:
        _KNOWN_SECRETS.update(_variants(new))
        if _REDACTION_INSTALLED:
            return
        previous = logging.getLogRecordFactory()

        def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _redact_record(record)
            return record

        logging.setLogRecordFactory(redacting_factory)
        _REDACTION_INSTALLED = True


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a record with bad arguments is the logging module's to report
        return
    cleaned = redact(message)
    if cleaned != message:
        record.msg, record.args = cleaned, None
    if record.exc_info and record.exc_info[1] is not None:
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        cleaned = redact(text)
        if cleaned != text:
            record.exc_text = cleaned


def _replace(text: str, secret: str) -> str:
    if len(secret) >= WHOLE_WORD_LENGTH:
        return text.replace(secret, REDACTED)
    return re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", REDACTED, text)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL made public (:func:`public_url`) and ``secrets`` and registered secrets replaced.

    >>> redact("GET https://me:pw1234@h/a.nc?pwd=ab1&x=1 failed: pwd ab1")
    'GET https://h/a.nc#q8f68021006 failed: pwd ***'
    """
    text = str(text)
    secrets = set(secrets)
    if "://" in text:
        for url in sorted(set(_URL.findall(text)), key=len, reverse=True):
            secrets |= url_secrets(url)
            text = text.replace(url, public_url(url))
    # Longest first, so a secret containing another is replaced whole.
    for secret in sorted(_variants(secrets) | _KNOWN_SECRETS, key=len, reverse=True):
        if secret in text:
            text = _replace(text, secret)
    return text
