"""Stage prepare@<corpus>: tokenize one corpus into data/shards/<corpus>/ (train.bin, val.bin,
meta.json) and record its token counts in metrics/prepare/<corpus>.json."""

from scratchgpt.files import write_json
from scratchgpt.plumbing import paths, stage
from scratchgpt.plumbing.corpus import corpus_files
from scratchgpt.plumbing.datasets import verify_dataset
from scratchgpt.plumbing.sections.download import DownloadParams
from scratchgpt.plumbing.sections.prepare import PrepareParams
from scratchgpt.plumbing.shard_writer import make_tokenizer, write_shards


def main(st: stage.Stage) -> None:
    name, params = st.key, st.params
    corpus, bpe = params.prepare.corpora[name], params.prepare.bpe_dataset
    for dataset in (corpus.dataset, bpe):
        verify_dataset(dataset, params.download.datasets[dataset], paths.raw(dataset))
    files = corpus_files(paths.raw(corpus.dataset))
    tokenizer = make_tokenizer(corpus.tokenizer, paths.raw(bpe), files, corpus.documents)
    meta = write_shards(
        files, tokenizer, st.out(paths.shards(name)), train_ratio=corpus.train_ratio, mode=corpus.documents, name=name
    )
    splits = meta["splits"]
    metrics = {
        "vocab_size": meta["vocab_size"],
        "train_tokens": splits["train"]["tokens"],
        "val_tokens": splits["val"]["tokens"],
        "train_documents": splits["train"]["documents"],
        "val_documents": splits["val"]["documents"],
    }
    write_json(st.out(paths.METRICS / "prepare" / f"{name}.json"), metrics)
    print(f"{paths.shards(name)}: " + ", ".join(f"{k} {v:,}" for k, v in metrics.items()))


if __name__ == "__main__":
    stage.run(main, PrepareParams, DownloadParams)
