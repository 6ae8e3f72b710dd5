"""The dashboard's pages, one module each with a `render(ctx)`; app.py lists them."""
