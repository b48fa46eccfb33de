"""Profile `world`: the embedded shapes world, where every model is small and trained here.

* prepare: sample the world (synth2.world.datasets): unlabelled pool, scarce skewed human pairs, text
  corpus, uniform validation and test sets with references, concepts; pixels per image set;
* caption LM: a small GPT-2 trained from scratch on the text corpus as concept prompt -> caption;
* captions are read back by the world parser (synth2.world.parser) for balancing, gating and scoring;
* image encoder: a convolutional autoencoder trained on the unlabelled pool (the paper's VQGAN);
* synthesis report: embedding- vs pixel-space timing through the autoencoder's decoder, and a contact
  sheet of decoded synthetic embeddings, held-out combinations first;
* the VLM starts from the caption LM; captions are scored with CIDEr/BLEU-4 and exact attribute accuracy.

One hook module per stage (see synth2.profiles).
"""
