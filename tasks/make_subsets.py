"""Rebuild the data shipped in tasks/ and data/ from ../shared/data (the public sources, kept as published).

Run from the project root: `python tasks/make_subsets.py [SHARED_DATA_DIR]`. Deterministic: the same
sources give byte-identical files. DialogSum is deliberately not shipped (non-commercial licence).
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(shared: Path) -> None:
    # banking77: the full data set, as published (CC BY 4.0).
    for name in ("train.csv", "test.csv", "categories.json"):
        shutil.copyfile(shared / "banking77" / name, HERE / "banking77" / name)
    shutil.copyfile(shared / "banking77" / "LICENSE", HERE / "banking77" / "LICENSE")

    # support-qa: HaluEval QA (one-turn file): knowledge, question and the right answer (MIT).
    rows = [json.loads(line) for line in (shared / "halueval" / "qa_one-turn_data.jsonl").open()]
    write_jsonl(HERE / "support-qa" / "qa.jsonl", [
        {"id": f"halueval-qa-{i:03d}", "knowledge": r["knowledge"], "question": r["question"],
         "right_answer": r["right_answer"]} for i, r in enumerate(rows)])
    shutil.copyfile(shared / "halueval" / "LICENSE", HERE / "support-qa" / "LICENSE")

    # data/halueval: the files `harness validate-detector` scores detectors on, unchanged (MIT).
    validation = HERE.parent / "data" / "halueval"
    validation.mkdir(parents=True, exist_ok=True)
    for name in ("qa_one-turn_data.jsonl", "qa_multi-turn_data.jsonl", "general_data.jsonl", "LICENSE"):
        shutil.copyfile(shared / "halueval" / name, validation / name)

    # legal-plain: plain-English summaries of ToS and licence sections (Apache-2.0); summaries of
    # fewer than three words ("hi.") carry no content to score and are left out.
    pairs = json.loads((shared / "legal_summarization" / "all_v1.json").read_text())
    write_jsonl(HERE / "legal-plain" / "sections.jsonl", [
        {"id": key, "doc": v["doc"], "text": v["original_text"], "summary": v["reference_summary"]}
        for key, v in sorted(pairs.items()) if len(v["reference_summary"].split()) >= 3])
    shutil.copyfile(shared / "legal_summarization" / "LICENSE.md", HERE / "legal-plain" / "LICENSE.md")

    # tico19-en-fr: TICO-19 English-French test set (CC0), line-aligned in the source.
    base = shared / "tico19" / "testsets" / "eng-fra"
    en = (base / "tico19-test.eng").read_text(encoding="utf-8").splitlines()
    fr = (base / "tico19-test.fra").read_text(encoding="utf-8").splitlines()
    assert len(en) == len(fr), "TICO-19 files are not aligned"
    pairs_en_fr = enumerate(zip(en, fr, strict=True))
    write_jsonl(HERE / "tico19-en-fr" / "pairs.jsonl", [
        {"id": f"tico19-{i:04d}", "en": e, "fr": f} for i, (e, f) in pairs_en_fr if e.strip() and f.strip()])
    shutil.copyfile(shared / "tico19" / "LICENSE-CC0.md", HERE / "tico19-en-fr" / "LICENSE-CC0.md")
    with (HERE / "banking77" / "train.csv").open() as handle:
        print(f"banking77 train rows: {sum(1 for _ in csv.reader(handle)) - 1}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parent.parent / "shared" / "data")
