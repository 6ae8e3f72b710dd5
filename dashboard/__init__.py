"""The review dashboard (Streamlit): `harness dashboard` serves app.py on 127.0.0.1."""
