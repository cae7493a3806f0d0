"""Adapters that put a maxsim index behind other frameworks' retriever interfaces.

Each adapter lives in its own module and imports its framework only there, so ``import maxsim`` never
needs LangChain or LlamaIndex:

- :mod:`maxsim.integrations.langchain` (``pip install -e ".[langchain]"`` from a maxsim checkout)
- :mod:`maxsim.integrations.llamaindex` (``pip install -e ".[llamaindex]"`` from a maxsim checkout)
"""
