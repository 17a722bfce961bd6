"""Several sampled answers per conversation from several models (teacher, run models, directories, endpoints),
through the one client: what the prompt system and the preference builder both sample with."""

from __future__ import annotations


def sample_candidates(clients: list, conversations: list[list[dict]], samples: int, temperature: float,
                      top_p: float, max_tokens: int, seed: int) -> list[list[str]]:
    """Per conversation, ``samples`` candidates from every client (a refused request gives none)."""
    candidates: list[list[str]] = [[] for _ in conversations]
    for client in clients:
        for sample in range(samples):
            replies = client.chat_many(conversations, keep_rejected=True, max_tokens=max_tokens,
                                       temperature=temperature, top_p=top_p, seed=seed + sample)
            for index, reply in enumerate(replies):
                if isinstance(reply, str) and reply.strip():
                    candidates[index].append(reply.strip())
    return candidates


def answering_clients(models: list[str], ctx, field: str, teacher) -> list:
    """One client per entry of a recipe's model list: ``teacher`` (``teacher()`` gives the shared teacher client),
    ``stage:NAME`` (that stage's model in the run), or a model directory; ``field`` names the list in errors."""
    from finloom.llm.client import LLMClient
    from finloom.recipe import ClientSection
    from finloom.stages import STAGE_MODEL_PREFIX

    clients = []
    for model in models:
        if model == "teacher":
            clients.append(teacher())
            continue
        path = (ctx.artifact(model.removeprefix(STAGE_MODEL_PREFIX), "model") if model.startswith(STAGE_MODEL_PREFIX)
                else ctx.recipe.resolve(model))
        clients.append(LLMClient(ClientSection(local_model=str(path)), f"{field} {model}"))
    return clients
