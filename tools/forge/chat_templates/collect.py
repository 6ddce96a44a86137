#!/usr/bin/python3
"""Copies the corpus of real chat templates into tests/Inference.Tests/Chat/Corpus/templates and writes corpus.json.

Sources (local git mirrors of public repositories, passed as arguments):
  --llamacpp DIR   a clone of ggml-org/llama.cpp (or a fork carrying the same models/templates/)
  --hfjs DIR       a clone of huggingface/huggingface.js (packages/ollama-utils/src/chat-template-automap.ts,
                   packages/jinja/test/e2e.test.js)
Each template is copied byte for byte; the manifest records the Hugging Face model, the repository, path and commit it
was read from, its licence (the model's), and the bos/eos token strings of the model's tokenizer config.
"""
import argparse, json, os, re, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
OUT = os.path.join(ROOT, "tests", "Inference.Tests", "Chat", "Corpus")

# name, HF model, licence, bos, eos, source kind, source key
LLAMACPP = [
    ("Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-7B-Instruct", "Apache-2.0", "", "<|im_end|>", "Qwen-Qwen2.5-7B-Instruct.jinja"),
    ("Qwen3-0.6B", "Qwen/Qwen3-0.6B", "Apache-2.0", "", "<|im_end|>", "Qwen-Qwen3-0.6B.jinja"),
    ("QwQ-32B", "Qwen/QwQ-32B", "Apache-2.0", "", "<|im_end|>", "Qwen-QwQ-32B.jinja"),
    ("Qwen3-Coder-30B-A3B-Instruct", "Qwen/Qwen3-Coder-30B-A3B-Instruct", "Apache-2.0", "", "<|im_end|>", "Qwen3-Coder.jinja"),
    ("Qwen3.5-4B", "Qwen/Qwen3.5-4B", "Apache-2.0", "", "<|im_end|>", "Qwen3.5-4B.jinja"),
    ("SmolLM3-3B", "HuggingFaceTB/SmolLM3-3B", "Apache-2.0", "", "<|im_end|>", "HuggingFaceTB-SmolLM3-3B.jinja"),
    ("gemma-2-2b-it", "google/gemma-2-2b-it", "Gemma Terms of Use", "<bos>", "<eos>", "google-gemma-2-2b-it.jinja"),
    ("gemma-4-31B-it", "google/gemma-4-31B-it", "Apache-2.0", "<bos>", "<eos>", "google-gemma-4-31B-it.jinja"),
    ("Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct", "Llama 3.1 Community License", "<|begin_of_text|>", "<|eot_id|>", "meta-llama-Llama-3.1-8B-Instruct.jinja"),
    ("Llama-3.2-3B-Instruct", "meta-llama/Llama-3.2-3B-Instruct", "Llama 3.2 Community License", "<|begin_of_text|>", "<|eot_id|>", "meta-llama-Llama-3.2-3B-Instruct.jinja"),
    ("Llama-3.3-70B-Instruct", "meta-llama/Llama-3.3-70B-Instruct", "Llama 3.3 Community License", "<|begin_of_text|>", "<|eot_id|>", "meta-llama-Llama-3.3-70B-Instruct.jinja"),
    ("Phi-3.5-mini-instruct", "microsoft/Phi-3.5-mini-instruct", "MIT", "<s>", "<|endoftext|>", "microsoft-Phi-3.5-mini-instruct.jinja"),
    ("Mistral-Nemo-Instruct-2407", "mistralai/Mistral-Nemo-Instruct-2407", "Apache-2.0", "<s>", "</s>", "mistralai-Mistral-Nemo-Instruct-2407.jinja"),
    ("Mistral-Small-3.2-24B-Instruct-2506", "mistralai/Mistral-Small-3.2-24B-Instruct-2506", "Apache-2.0", "<s>", "</s>", "Mistral-Small-3.2-24B-Instruct-2506.jinja"),
    ("Ministral-3-14B-Reasoning-2512", "mistralai/Ministral-3-14B-Reasoning-2512", "Apache-2.0", "<s>", "</s>", "mistralai-Ministral-3-14B-Reasoning-2512.jinja"),
    ("Devstral-Small-2507", "unsloth/Devstral-Small-2507 (of mistralai/Devstral-Small-2507)", "Apache-2.0", "<s>", "</s>", "unsloth-mistral-Devstral-Small-2507.jinja"),
    ("gpt-oss-120b", "openai/gpt-oss-120b", "Apache-2.0", "<|startoftext|>", "<|return|>", "openai-gpt-oss-120b.jinja"),
    ("granite-3.3-2b-instruct", "ibm-granite/granite-3.3-2b-instruct", "Apache-2.0", "<|end_of_text|>", "<|end_of_text|>", "ibm-granite-granite-3.3-2B-Instruct.jinja"),
    ("granite-4.0", "ibm-granite/granite-4.0-h-small", "Apache-2.0", "<|end_of_text|>", "<|end_of_text|>", "ibm-granite-granite-4.0.jinja"),
    ("DeepSeek-R1-Distill-Llama-8B", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "MIT", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja"),
    ("DeepSeek-R1-Distill-Qwen-32B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", "MIT", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"),
    ("DeepSeek-V3.1", "deepseek-ai/DeepSeek-V3.1", "MIT", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "deepseek-ai-DeepSeek-V3.1.jinja"),
    ("Hermes-2-Pro-Llama-3-8B-tool_use", "NousResearch/Hermes-2-Pro-Llama-3-8B (tool_use)", "Llama 3 Community License", "<|begin_of_text|>", "<|im_end|>", "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja"),
    ("Hermes-3-Llama-3.1-8B-tool_use", "NousResearch/Hermes-3-Llama-3.1-8B (tool_use)", "Llama 3.1 Community License", "<|begin_of_text|>", "<|im_end|>", "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja"),
    ("llama-3-firefunction-v2", "fireworks-ai/llama-3-firefunction-v2", "Llama 3 Community License", "<|begin_of_text|>", "<|eot_id|>", "fireworks-ai-llama-3-firefunction-v2.jinja"),
    ("functionary-medium-v3.2", "meetkai/functionary-medium-v3.2", "MIT", "<|begin_of_text|>", "<|eot_id|>", "meetkai-functionary-medium-v3.2.jinja"),
    ("c4ai-command-r-plus-tool_use", "CohereForAI/c4ai-command-r-plus (tool_use)", "CC-BY-NC-4.0", "<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>", "CohereForAI-c4ai-command-r-plus-tool_use.jinja"),
    ("c4ai-command-r7b-12-2024-tool_use", "CohereForAI/c4ai-command-r7b-12-2024 (tool_use)", "CC-BY-NC-4.0", "<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>", "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja"),
    ("Kimi-K2-Instruct", "moonshotai/Kimi-K2-Instruct", "Modified MIT", "[BOS]", "[EOS]", "moonshotai-Kimi-K2.jinja"),
    ("GLM-4.6", "zai-org/GLM-4.6", "MIT", "", "<|endoftext|>", "GLM-4.6.jinja"),
    ("NVIDIA-Nemotron-Nano-9B-v2", "nvidia/NVIDIA-Nemotron-Nano-9B-v2", "NVIDIA Open Model License", "<SPECIAL_10>", "<SPECIAL_11>", "NVIDIA-Nemotron-Nano-v2.jinja"),
    ("LFM2-8B-A1B", "LiquidAI/LFM2-8B-A1B", "LFM Open License v1.0", "<|startoftext|>", "<|im_end|>", "LFM2-8B-A1B.jinja"),
    ("Seed-OSS-36B-Instruct", "ByteDance-Seed/Seed-OSS-36B-Instruct", "Apache-2.0", "<seed:bos>", "<seed:eos>", "ByteDance-Seed-OSS.jinja"),
    ("MiniMax-M2", "MiniMaxAI/MiniMax-M2", "MIT", "]~!b[", "[e~[", "MiniMax-M2.jinja"),
    ("Apertus-8B-Instruct", "swiss-ai/Apertus-8B-Instruct-2509", "Apache-2.0", "<s>", "</s>", "Apertus-8B-Instruct.jinja"),
    ("Apriel-1.5-15b-Thinker", "unsloth/Apriel-1.5-15b-Thinker (of ServiceNow-AI/Apriel-1.5-15b-Thinker)", "MIT", "<s>", "</s>", "unsloth-Apriel-1.5.jinja"),
]

AUTOMAP = [
    ("gemma-3-1b-it", "google/gemma-3-1b-it", "Gemma Terms of Use", "<bos>", "<eos>", "library/gemma3:1b"),
    ("Phi-3-mini-4k-instruct", "microsoft/Phi-3-mini-4k-instruct", "MIT", "<s>", "<|endoftext|>", "library/phi3:3.8b"),
    ("phi-4", "microsoft/phi-4", "MIT", "<|endoftext|>", "<|im_end|>", "library/phi4:14b"),
    ("Phi-4-mini-instruct", "microsoft/Phi-4-mini-instruct", "MIT", "<|endoftext|>", "<|endoftext|>", "library/phi4-mini:3.8b"),
    ("Phi-4-reasoning", "microsoft/Phi-4-reasoning", "MIT", "<|endoftext|>", "<|im_end|>", "library/phi4-reasoning:14b"),
    ("granite-3.1-1b-a400m-instruct", "ibm-granite/granite-3.1-1b-a400m-instruct", "Apache-2.0", "<|end_of_text|>", "<|end_of_text|>", "library/granite3.1-moe:1b"),
    ("granite-3.2-8b-instruct", "ibm-granite/granite-3.2-8b-instruct", "Apache-2.0", "<|end_of_text|>", "<|end_of_text|>", "library/granite3.2:8b"),
    ("Meta-Llama-3-8B-Instruct", "meta-llama/Meta-Llama-3-8B-Instruct", "Llama 3 Community License", "<|begin_of_text|>", "<|eot_id|>", "library/llama3:8b"),
    ("Llama-4-Scout-17B-16E-Instruct", "meta-llama/Llama-4-Scout-17B-16E-Instruct", "Llama 4 Community License", "<|begin_of_text|>", "<|eot|>", "library/llama4:latest"),
    ("SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", "Apache-2.0", "<|im_start|>", "<|im_end|>", "library/smollm2:135m"),
    ("OLMo-2-1124-7B-Instruct", "allenai/OLMo-2-1124-7B-Instruct", "Apache-2.0", "<|endoftext|>", "<|endoftext|>", "library/olmo2:7b"),
    ("Llama-3.1-Tulu-3-70B", "allenai/Llama-3.1-Tulu-3-70B", "Llama 3.1 Community License", "<|begin_of_text|>", "<|end_of_text|>", "library/tulu3:70b"),
    ("EXAONE-3.5-7.8B-Instruct", "LGAI-EXAONE/EXAONE-3.5-7.8B-Instruct", "EXAONE AI Model License 1.1 NC", "[BOS]", "[|endofturn|]", "library/exaone3.5:7.8b"),
    ("glm-4-9b-chat", "THUDM/glm-4-9b-chat", "glm-4 licence", "", "<|endoftext|>", "library/glm4:9b"),
    ("TinyLlama-1.1B-Chat-v1.0", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "Apache-2.0", "<s>", "</s>", "library/tinyllama:1.1b"),
    ("Nemotron-Mini-4B-Instruct", "nvidia/Nemotron-Mini-4B-Instruct", "NVIDIA Community Model License", "<s>", "</s>", "library/nemotron-mini:4b"),
    ("c4ai-command-r-08-2024", "CohereForAI/c4ai-command-r-08-2024", "CC-BY-NC-4.0", "<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>", "library/command-r:35b"),
    ("DeepSeek-V3", "deepseek-ai/DeepSeek-V3", "MIT", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "library/deepseek-v3:671b"),
    ("Mistral-Small-24B-Instruct-2501", "mistralai/Mistral-Small-24B-Instruct-2501", "Apache-2.0", "<s>", "</s>", "library/mistral-small:24b"),
    ("falcon-11B", "tiiuae/falcon-11B", "TII Falcon License 2.0", "", "<|endoftext|>", "library/falcon2:11b"),
]

E2E = [
    ("zephyr-7b-beta", "HuggingFaceH4/zephyr-7b-beta", "MIT", "<s>", "</s>", "HuggingFaceH4/zephyr-7b-beta (add_generation_prompt=true)"),
    ("openchat-3.5-0106", "openchat/openchat-3.5-0106", "Apache-2.0", "<s>", "<|end_of_turn|>", "openchat/openchat-3.5-0106"),
    ("SOLAR-10.7B-Instruct-v1.0", "upstage/SOLAR-10.7B-Instruct-v1.0", "CC-BY-NC-4.0", "<s>", "</s>", "upstage/SOLAR-10.7B-Instruct-v1.0"),
    ("CodeLlama-70b-Instruct-hf", "codellama/CodeLlama-70b-Instruct-hf", "Llama 2 Community License", "<s>", "</s>", "codellama/CodeLlama-70b-Instruct-hf"),
    ("deepseek-coder-33b-instruct", "deepseek-ai/deepseek-coder-33b-instruct", "DeepSeek License", "<｜begin▁of▁sentence｜>", "<|EOT|>", "deepseek-ai/deepseek-coder-33b-instruct"),
    ("internlm2-chat-7b", "internlm/internlm2-chat-7b", "Apache-2.0 (code) / InternLM licence (weights)", "<s>", "</s>", "internlm/internlm2-chat-7b"),
    ("Mixtral-8x7B-Instruct-v0.1", "mistralai/Mixtral-8x7B-Instruct-v0.1", "Apache-2.0", "<s>", "</s>", "mistralai/Mixtral-8x7B-Instruct-v0.1"),
    ("MiniCPM3-4B", "openbmb/MiniCPM3-4B", "Apache-2.0", "<s>", "<|im_end|>", "openbmb/MiniCPM3-4B"),
    ("AI21-Jamba-Large-1.6", "ai21labs/AI21-Jamba-Large-1.6", "Jamba Open Model License", "<|startoftext|>", "<|endoftext|>", "ai21labs/AI21-Jamba-Large-1.6"),
    ("Hammer2.1", "MadeAgents/Hammer2.1-7b", "CC-BY-NC-4.0", "", "<|im_end|>", "MadeAgents/Hammer2.1"),
    ("Llama-3.2-11B-Vision-Instruct", "meta-llama/Llama-3.2-11B-Vision-Instruct", "Llama 3.2 Community License", "<|begin_of_text|>", "<|eot_id|>", "meta-llama/Llama-3.2-11B-Vision-Instruct"),
    ("c4ai-command-a-03-2025", "CohereLabs/c4ai-command-a-03-2025", "CC-BY-NC-4.0", "<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>", "CohereLabs/c4ai-command-a-03-2025"),
    ("Qwen1.5-72B-Chat", "Qwen/Qwen1.5-72B-Chat", "Tongyi Qianwen licence", "", "<|im_end|>", "Qwen/Qwen1.5-72B-Chat"),
    ("functionary-medium-v2.2", "meetkai/functionary-medium-v2.2", "MIT", "<s>", "</s>", "meetkai/functionary-medium-v2.2"),
]


def git(repo, *args):
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True).stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llamacpp", required=True)
    ap.add_argument("--llamacpp-name", default="Raudbjorn/ggml-llama.cpp (a fork of ggml-org/llama.cpp)")
    ap.add_argument("--hfjs", required=True)
    a = ap.parse_args()
    os.makedirs(os.path.join(OUT, "templates"), exist_ok=True)
    manifest = []

    def add(name, model, licence, bos, eos, text, repo, path, commit):
        with open(os.path.join(OUT, "templates", name + ".jinja"), "w", encoding="utf-8", newline="") as f:
            f.write(text)
        manifest.append({"name": name, "model": model, "licence": licence, "bos_token": bos, "eos_token": eos,
                         "repository": repo, "path": path, "commit": commit})

    lc_commit = git(a.llamacpp, "rev-parse", "HEAD").decode().strip()
    for name, model, licence, bos, eos, file in LLAMACPP:
        path = "models/templates/" + file
        add(name, model, licence, bos, eos, git(a.llamacpp, "show", "HEAD:" + path).decode("utf-8"), a.llamacpp_name, path, lc_commit)

    js_commit = git(a.hfjs, "rev-parse", "HEAD").decode().strip()
    automap_path = "packages/ollama-utils/src/chat-template-automap.ts"
    ts = git(a.hfjs, "show", "HEAD:" + automap_path).decode("utf-8")
    gguf = {m.group(1): json.loads(m.group(2)) for m in re.finditer(r'model: "([^"]+)",\s*gguf: ("(?:[^"\\]|\\.)*")', ts)}
    for name, model, licence, bos, eos, key in AUTOMAP:
        add(name, model, licence, bos, eos, gguf[key], "huggingface/huggingface.js", f"{automap_path} (entry {key}: the GGUF's copy of the model's template)", js_commit)

    # e2e.test.js: evaluate its template table with node (the file is JavaScript).
    e2e_path = "packages/jinja/test/e2e.test.js"
    js = git(a.hfjs, "show", "HEAD:" + e2e_path).decode("utf-8")
    start = js.index("const EXAMPLE_CHAT = ")
    end = js.index("function render(")
    script = js[start:end] + "\nprocess.stdout.write(JSON.stringify(Object.fromEntries(Object.entries(TEST_CUSTOM_TEMPLATES).map(([k, v]) => [k, v.chat_template]))));\n"
    table = json.loads(subprocess.run(["node", "-"], input=script.encode("utf-8"), check=True, capture_output=True).stdout)
    for name, model, licence, bos, eos, key in E2E:
        add(name, model, licence, bos, eos, table[key], "huggingface/huggingface.js", f"{e2e_path} (entry \"{key}\")", js_commit)

    with open(os.path.join(OUT, "corpus.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{len(manifest)} templates")


if __name__ == "__main__":
    main()
