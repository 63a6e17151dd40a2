"""A recording's object keys: the layout signed recordings are stored in, written out
literally so that a change to it cannot pass unnoticed."""

from __future__ import annotations

from storage.recording_keys import (
    FIRST_INIT_NAME,
    backfill_init_name,
    init_name,
    is_media_name,
    manifest_key,
    object_key,
    recording_prefix,
    segment_key,
    signature_key,
)


def test_keys_of_a_recording() -> None:
    assert recording_prefix("r1") == "recordings/r1/"
    assert manifest_key("r1") == "recordings/r1/manifest.json"
    assert signature_key("r1") == "recordings/r1/manifest.sig"
    assert segment_key("r1", 42) == "recordings/r1/seg-42.m4s"
    assert object_key("r1", FIRST_INIT_NAME) == "recordings/r1/init.mp4"
    assert (init_name(7), backfill_init_name(0)) == ("init-7.mp4", "init-bf0.mp4")


def test_media_names_are_segments_and_inits_only() -> None:
    for name in ("seg-0.m4s", "init.mp4", "init-12.mp4", "init-bf3.mp4"):
        assert is_media_name(name), name
    for name in ("manifest.json", "manifest.sig", "seg-x.m4s", "../seg-1.m4s", "init-bf.mp4"):
        assert not is_media_name(name), name
