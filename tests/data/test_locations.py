"""Where data and caches live: environment overrides and install hints."""

from __future__ import annotations

import pytest

from vlarena.data import DataUnavailableError, cache_dir, emoji_dir, fashion_mnist_dir, locations


def test_cache_dir_prefers_vlarena_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("VLARENA_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "explicit"
    assert cache_dir().is_dir()
    monkeypatch.delenv("VLARENA_CACHE_DIR")
    assert cache_dir() == tmp_path / "xdg" / "vlarena"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == tmp_path / "home" / ".cache" / "vlarena"


def test_fashion_mnist_dir_explains_how_to_install_when_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("VLARENA_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(DataUnavailableError) as caught:
        fashion_mnist_dir()
    message = str(caught.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "make setup" in message
    assert "VLARENA_FASHION_MNIST_DIR" in message


def test_fashion_mnist_dir_defaults_to_the_debian_package(monkeypatch):
    monkeypatch.delenv("VLARENA_FASHION_MNIST_DIR", raising=False)
    assert fashion_mnist_dir() == locations.DEFAULT_FASHION_MNIST_DIR


def test_emoji_dir_honours_the_environment_and_checks_it(monkeypatch, tmp_path):
    monkeypatch.setenv("VLARENA_EMOJI_DIR", str(tmp_path))
    with pytest.raises(DataUnavailableError, match=r"no emoji\.json"):
        emoji_dir()
    (tmp_path / "emoji.json").write_text("[]")
    assert emoji_dir() == tmp_path


def test_emoji_dir_searches_the_working_directory_first(monkeypatch, tmp_path):
    package = tmp_path / ".deps" / "node_modules" / "emoji-datasource-twitter"
    package.mkdir(parents=True)
    (package / "emoji.json").write_text("[]")
    monkeypatch.delenv("VLARENA_EMOJI_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert emoji_dir() == package


def test_emoji_dir_explains_how_to_install_when_missing(monkeypatch, tmp_path):
    monkeypatch.delenv("VLARENA_EMOJI_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(locations, "_emoji_candidate_dirs", lambda: [tmp_path / "nowhere"])
    with pytest.raises(DataUnavailableError) as caught:
        emoji_dir()
    message = str(caught.value)
    assert "make setup" in message
    assert "npm install --prefix .deps emoji-datasource-twitter@16.0.0" in message
    assert "VLARENA_EMOJI_DIR" in message
