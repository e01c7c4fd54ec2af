"""Tuneforge sandbox: an in-memory emulator of the OpenAI API surface Tuneforge uses.

It serves Files, fine-tuning jobs (with events, checkpoints and result files), Models and chat
completions under `/v1`, shaped like OpenAI's OpenAPI document. Jobs advance on a simulated clock
(`time_scale` wall seconds per simulated second), so tests finish in seconds and demos in minutes.

Chat on a sandbox-tuned model is answered by retrieving the closest training example (character
n-gram similarity). That is a stand-in that makes base-vs-tuned comparisons measurable offline;
it is not a language model.

Run it with `uvicorn --factory sandbox.app:create_app`.
"""
