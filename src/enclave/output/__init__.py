"""Protocol-neutral shaping of chat generations, shared by the OpenAI and Ollama APIs.

Going in, a chat request becomes a ``ChatPlan``: the prompt text (with tool definitions and
the template's thinking switch applied), the grammar that constrains sampling, and how the
output is to be read. Coming out, ``ChatOutputParser`` turns the generated text into
reasoning, answer text and tool calls, holding back any text that could still turn out to
be part of a ``<think>`` tag or a tool-call marker.
"""
