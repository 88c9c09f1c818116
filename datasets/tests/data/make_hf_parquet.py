"""Writes hf_export.parquet with the Hugging Face `datasets` library itself (the reference for
the parquet loader): an `image` column of `datasets.Image()` (struct {bytes, path}) and a
`text` column. Row 2 carries corrupt image bytes on purpose. Re-run: python3 make_hf_parquet.py
(datasets 5.2.0, pyarrow 26.0.1, Pillow 13.0.0)."""
import io
import datasets
from PIL import Image

def png(rgb, size=(6, 4)):
    buf = io.BytesIO()
    Image.new("RGB", size, rgb).save(buf, format="PNG")
    return buf.getvalue()

rows = {
    "image": [
        {"bytes": png((200, 10, 10)), "path": "red.png"},
        {"bytes": png((10, 200, 10), (8, 8)), "path": "green.png"},
        {"bytes": b"this is not an image", "path": "broken.png"},
    ],
    "text": ["a red image", "a green image", "a broken image"],
}
features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
ds = datasets.Dataset.from_dict(rows, features=features)
ds.to_parquet("hf_export.parquet")
