"""MiniLM sentences/s in PyTorch and ONNX Runtime on the same token ids as piazza's example.

Called by `cargo run --release -p piazza-engine --example encoder_speed` with
`PIAZZA_BENCH_PYTHON=<python with torch, transformers, onnxruntime, onnx>`:
    python encoder_anchors.py <model dir> <workloads.json>
workloads.json: {"threads": [1, 2], "rounds": 5, "workloads": [{"name": ..., "batches": [[ids...], ...]}]}
(each batch a list of equal-length, padded id rows; 0 is padding). Prints one JSON object:
{"torch": {"<name>/<threads>": seconds}, "onnxruntime": {...}} — the best of `rounds` runs of
all the workload's batches, model loading untimed, threads pinned (torch.set_num_threads,
ORT intra_op_num_threads and inter_op_num_threads = 1).
"""
import json
import os
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
import torch
from transformers import BertModel


def mean_pool_normalize(hidden, mask):
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)


class HiddenStates(torch.nn.Module):
    """The encoder with keyword inputs, for the ONNX export."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def main():
    model_dir, spec_path = sys.argv[1], sys.argv[2]
    spec = json.load(open(spec_path))
    model = BertModel.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    onnx_path = os.path.join(tempfile.mkdtemp(), "minilm.onnx")
    example = torch.ones(2, 8, dtype=torch.long)
    with torch.no_grad():
        torch.onnx.export(
            HiddenStates(model),
            (example, example),
            onnx_path,
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "seq"},
                "attention_mask": {0: "batch", 1: "seq"},
            },
            opset_version=17,
            dynamo=False,
        )
    results = {"torch": {}, "onnxruntime": {}}
    for threads in spec["threads"]:
        torch.set_num_threads(threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        for workload in spec["workloads"]:
            batches = [np.array(b, dtype=np.int64) for b in workload["batches"]]
            masks = [(b != 0).astype(np.int64) for b in batches]

            def run_torch():
                with torch.inference_mode():
                    for ids, mask in zip(batches, masks):
                        ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
                        hidden = model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
                        mean_pool_normalize(hidden, mask_t)

            def run_ort():
                for ids, mask in zip(batches, masks):
                    hidden = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
                    mean_pool_normalize(torch.from_numpy(hidden), torch.from_numpy(mask))

            for name, run in (("torch", run_torch), ("onnxruntime", run_ort)):
                run()  # warm-up
                best = float("inf")
                for _ in range(spec["rounds"]):
                    start = time.perf_counter()
                    run()
                    best = min(best, time.perf_counter() - start)
                results[name][f"{workload['name']}/{threads}"] = best
    print(json.dumps(results))


if __name__ == "__main__":
    main()
