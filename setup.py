from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
requirements = [
    line.strip()
    for line in (here / "requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#") and not line.startswith(("pytest", "hypothesis"))
]

setup(
    name="dlens_tf",
    version="0.1.0",
    description="Differentially private learning through gradient compression and aggregation "
    "(DataLens, TopAgg, DP-SGD with compression) for Keras/TensorFlow.",
    long_description=(here / "README.md").read_text() if (here / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["dlens_tf", "dlens_tf.*"]),
    python_requires=">=3.9,<3.12",
    install_requires=requirements,
    extras_require={"test": ["pytest>=7,<10", "hypothesis>=6.80,<7"]},
    license="Apache-2.0",
)
