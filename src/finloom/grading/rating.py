"""A judge's 1-10 rating of a response, alone or against a reference answer: what the prompt system's response
filter and the preference builder's absolute and golden-answer modes both ask, with one prompt and one parser."""

from __future__ import annotations

from finloom.llm.judge import ask_judge, reply_json

RATE_PROMPT = """Rate the assistant's response to the user's request from 1 (useless or wrong) to 10 (accurate, complete, clear, compliant, in the user's language, following every instruction).{reference_rule}

Request:
<<<
{prompt}
>>>
{reference}
Response:
<<<
{response}
>>>

Reply with only a JSON object: {{"score": 7}}"""
REFERENCE_RULE = (" Judge it against the reference answer: 10 if it reaches the same result with sound reasoning, "
                  "1 if its result is wrong; judge the prose only when the results agree.")


def rating_prompt(prompt: str, response: str, reference: str | None = None) -> str:
    return RATE_PROMPT.format(prompt=prompt, response=response,
                              reference_rule=REFERENCE_RULE if reference else "",
                              reference=f"\nReference answer:\n<<<\n{reference}\n>>>\n" if reference else "")


def parse_score(reply: str) -> float | None:
    """The 1-10 score of a judge's reply, or None if it has none in range."""
    payload = reply_json(reply)
    value = payload.get("score") if payload else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 10:
        return None
    return float(value)


def rate(client, prompts: list[str], responses: list[str], retries: int,
         reference: str | list[str | None] | None = None) -> tuple[list[float | None], list[list[str]]]:
    """1-10 scores (None: never parsed after ``retries``) and the raw replies, one per response; ``reference``:
    one reference answer for all, or one (or None) per response."""
    references = reference if isinstance(reference, list) else [reference] * len(responses)
    verdicts = ask_judge(client, [rating_prompt(p, r, ref) for p, r, ref in zip(prompts, responses, references)],
                         lambda _, reply: parse_score(reply), retries, max_tokens=32)
    return [v.parsed for v in verdicts], [v.replies for v in verdicts]
