"""The transformers code each patch rule was verified on: written by tools/compat_matrix.py from the
parity tests it ran (do not edit).

RANGE: the oldest and newest release of the matrix. RELEASES: per family, the releases on which
all its parity tests passed. FINGERPRINTS: per rule (family/kind), its fingerprints
(vlmops.transformers.patch.fingerprint) on those releases, each with the releases that have it.
SOURCES: per guarded function, the sha256 of its source on those releases, likewise.
"""

RANGE = ("5.24.0", "5.24.0")

RELEASES = {
    "Qwen2-VL": ("5.24.0",),
    "Qwen2.5-VL": ("5.24.0",),
    "Qwen3-VL": ("5.24.0",),
    "InternVL": ("5.24.0",),
    "Idefics3": ("5.24.0",),
    "SmolVLM": ("5.24.0",),
    "Pixtral": ("5.24.0",),
    "Mllama": ("5.24.0",),
    "LLaVA": ("5.24.0",),
    "LLaVA-OneVision": ("5.24.0",),
    "CLIP": ("5.24.0",),
    "SigLIP": ("5.24.0",),
}

FINGERPRINTS = {
    "CLIP/attention": {
        "a2fb08cb3402dd909c33ed474a2f37387cef8dea9b8952a2958afaf49607a422": ("5.24.0",),
    },
    "CLIP/patch_embed": {
        "92cdb7831982a9537b09f1d79e0efac98e8153f27e86f0ef7cbb14862848a5de": ("5.24.0",),
    },
    "Idefics3/pixel_shuffle": {
        "0df50a385845487355a853b995623823cf20bdb93ffdec3b3716eb454760720c": ("5.24.0",),
    },
    "InternVL/pixel_shuffle": {
        "4663aa4153b76e6a56993a2d8fa6b1c888a403478d056750fd188d03a63c2bfc": ("5.24.0",),
    },
    "LLaVA-OneVision/attention": {
        "65f4d21d3e6e9c1faef263378d97cf6be46362dd0a4de0d28918342299ec9723": ("5.24.0",),
    },
    "LLaVA-OneVision/patch_embed": {
        "91a661578deb1605be099e54264fb4101f4a545358372be7c878e96b5790a819": ("5.24.0",),
    },
    "LLaVA/attention": {
        "dad70e742405a336f5a1893ce5a19352d008ea064c9f857856db56ab1d78ee9b": ("5.24.0",),
    },
    "LLaVA/patch_embed": {
        "ddb033175365db671dfdb71a53ab59bc5331b60c4c39682f4d2ceb413303adca": ("5.24.0",),
    },
    "Mllama/cross_attention": {
        "cc47b9ec36f5ea805f74ebb9045394bbe049d0079ef673a70ed9c7f4a4bf1ff6": ("5.24.0",),
    },
    "Pixtral/attention": {
        "97ccd5b77ffa64ede7528a056969ee7486886f1c4dbe097f44d25b6b7984f559": ("5.24.0",),
    },
    "Pixtral/mlp": {
        "82bd0dd704c7b01f2f3508fa40e85e740d3c6e7bac92e6673cf180a2f77d9b9a": ("5.24.0",),
    },
    "Pixtral/norm": {
        "048c8e14bcc9d4d85779c1582cc8094d30374ca8debf34cafc58104b3d40d947": ("5.24.0",),
    },
    "Pixtral/patch_embed": {
        "84d17eb7ee50a681f0f7519939e35538002e531b339cf676394e2750bf32ea1f": ("5.24.0",),
    },
    "Pixtral/rope": {
        "f510b08d571dbab0d756617a74cc842240f1b604668b0b0e1539412fe688d2c5": ("5.24.0",),
    },
    "Qwen2-VL/attention": {
        "f2b3fa0e6e039c5453a00c2e83d36f9535a1dcaa7f1bdde597447034ab6311ee": ("5.24.0",),
    },
    "Qwen2-VL/patch_embed": {
        "2d4b9f02edeac117e35af79791338387a4383f6fcf48c3cbd3c72bf78bd6b749": ("5.24.0",),
    },
    "Qwen2-VL/rope": {
        "6a5a07d2b5ac6d25ed14f6f70f3fa1a3d4d78c7cf84860fe996392ebb18e3f0e": ("5.24.0",),
    },
    "Qwen2.5-VL/attention": {
        "848281301499269677fe13be44d09b82ea0aa97c8d71c67f82fe199e1fae87df": ("5.24.0",),
    },
    "Qwen2.5-VL/mlp": {
        "b783f619b206fa2dc1883a320116063feb65cc0247e86aaac54ee6750375a340": ("5.24.0",),
    },
    "Qwen2.5-VL/norm": {
        "497d28f0a2fd68e2fbf4a60e946c677e79048b15d33d6ebc22d2558627f30377": ("5.24.0",),
    },
    "Qwen2.5-VL/patch_embed": {
        "7fded83299d3dfcf631ab69c32cface13ddcef44a70cc0d780a70b23dc6007a4": ("5.24.0",),
    },
    "Qwen2.5-VL/rope": {
        "2ed6d761e6233cb53edbb083c1bdbcb6f8798a1ed3dc5b0e4a7d1b895ffd594f": ("5.24.0",),
    },
    "Qwen3-VL/attention": {
        "d40cfc7dcd730388b39768728aa21c51b69852d5a7c4481753de028b2cc030eb": ("5.24.0",),
    },
    "Qwen3-VL/patch_embed": {
        "43aac336bb9f124616a2f852a3b85fd246da1b1e7072601ed1d13a162f420c8e": ("5.24.0",),
    },
    "Qwen3-VL/rope": {
        "d4eaf48f549b65e9e215cf4c6ffc38aad09505d2ce94f11e502db6a54059381e": ("5.24.0",),
    },
    "SigLIP/attention": {
        "37de9cf0b3ea4af14241690f1990ed11d003accc3f5a6a8ae5bdfef9bbf6ab11": ("5.24.0",),
    },
    "SigLIP/patch_embed": {
        "8991252541f26c25ae8bd1cc7b7b6cd107dd246a7d7973dd184e5fe052383368": ("5.24.0",),
    },
    "SmolVLM/pixel_shuffle": {
        "de29a518afd9610af448c20f690ae4462fc265e8fc975bba72841c9b75bc4db7": ("5.24.0",),
    },
}

SOURCES = {
    "transformers.models.clip.modeling_clip:CLIPAttention.forward": {
        "45fb45ce967c253b82b398090cb5f2799d3798f620067f2f3b84de00464561a9": ("5.24.0",),
    },
    "transformers.models.clip.modeling_clip:CLIPEncoder.forward": {
        "1004cb628fc6685f8316486c8fe5e84692ecf7add0fbbc6f91cb397ab768ca50": ("5.24.0",),
    },
    "transformers.models.clip.modeling_clip:CLIPEncoderLayer.forward": {
        "75b63a9d281a8af0fcc3efb6b80f0bb0d9be9d3de4b30877f00e2d04c92abb5b": ("5.24.0",),
    },
    "transformers.models.clip.modeling_clip:CLIPVisionEmbeddings.__init__": {
        "dc7e49cf9c8b06869539cb970190b3208b4eeff4b75ebbcb963abaa685682256": ("5.24.0",),
    },
    "transformers.models.clip.modeling_clip:CLIPVisionEmbeddings.forward": {
        "82de901f98bfe2d2bdb82440a3d4f98185cd8c9e49afd24027eeff2c23958a8e": ("5.24.0",),
    },
    "transformers.models.clip.modeling_clip:CLIPVisionEmbeddings.interpolate_pos_encoding": {
        "ab8b567e85f8f7b8d988fc9dc333fb4de120496b861555eb0d57863a5d3d3739": ("5.24.0",),
    },
    "transformers.models.clip.modeling_clip:CLIPVisionModel.forward": {
        "6b056d1060d3ae4c17af01b7fdb078077658b65dc9b3cba75184a81e0bbd2aaf": ("5.24.0",),
    },
    "transformers.models.idefics3.modeling_idefics3:Idefics3Connector.forward": {
        "67d6770854cb3449479f3e6e18f093cbb6da6e7f735457f558211878f0f2dc72": ("5.24.0",),
    },
    "transformers.models.idefics3.modeling_idefics3:Idefics3Connector.pixel_shuffle": {
        "59fd364af5e65d6c062e339968dee46e9c9c1812817003b80b475f5cdfdcede8": ("5.24.0",),
    },
    "transformers.models.internvl.modeling_internvl:InternVLModel.get_image_features": {
        "7a124db3f9c669f6028c7337e1be16e02329475cba3144416e8c92b15ed0128d": ("5.24.0",),
    },
    "transformers.models.internvl.modeling_internvl:InternVLModel.pixel_shuffle": {
        "93d9721ad0c4df9b5ac9525c254f6fbc5ae9e0d2e65a4eac427f79f7009194a9": ("5.24.0",),
    },
    "transformers.models.internvl.modeling_internvl:InternVLMultiModalProjector.forward": {
        "ca57ed976a326d5ca7927f4bad8bac7b17465ad1be7c2f176caad5a93a74f6be": ("5.24.0",),
    },
    "transformers.models.llava.modeling_llava:LlavaModel.__init__": {
        "cc9af222e9282a4af2b876f0aa655fc7a6addd51d3c483be9127d8099edfb08a": ("5.24.0",),
    },
    "transformers.models.llava.modeling_llava:LlavaModel.get_image_features": {
        "4f9de0c01a9b60039e655fae33df7ff530301fc8b411b76bdc6892c784d00a25": ("5.24.0",),
    },
    "transformers.models.llava_onevision.modeling_llava_onevision:LlavaOnevisionModel.__init__": {
        "4402fe653377309a489a0a3871ee13eab8bad537be08696f1a9986098afee03f": ("5.24.0",),
    },
    "transformers.models.llava_onevision.modeling_llava_onevision:LlavaOnevisionModel.get_image_features": {
        "e8244aeb1687ecf0f28fd107aaa2898c1238e03ec825a5cb49117c40c770f5cc": ("5.24.0",),
    },
    "transformers.models.mllama.modeling_mllama:MllamaCrossAttentionDecoderLayer.forward": {
        "6da2fb91af9d4aaa4c8292660169d2d18d595dc817ff784247db076cc0807723": ("5.24.0",),
    },
    "transformers.models.mllama.modeling_mllama:MllamaModel.forward": {
        "d28fe843d788870606338fa51f21db941e4d3655a6f548682c9695bd9d5d17cd": ("5.24.0",),
    },
    "transformers.models.mllama.modeling_mllama:MllamaTextCrossAttention.forward": {
        "a088bfefcf156b981599a6ed630c6054066516d7d6a8d8f6a5ff819bfee034d0": ("5.24.0",),
    },
    "transformers.models.mllama.modeling_mllama:_prepare_cross_attention_mask": {
        "300fa05762c62044bda8ba08278368cad461f8d609917c5608ccfb32e3b37e88": ("5.24.0",),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralAttention.__init__": {
        "49bb19497cc0d00d52f23bc3eee13e6bf8da7055f593c702e0dcaaccf3f96d31": ("5.24.0",),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralAttention.forward": {
        "8eafcfc54e81f11c635a0038f32adf87abcab1cbd3e65df8f2ecc60d93f621c9": ("5.24.0",),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralAttentionLayer.forward": {
        "c5f18fb1773552c7da709e01dd7041f05f8a0747f9cd935c92a36aad2be4efae": ("5.24.0",),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralMLP.__init__": {
        "f8665938acefee57189a70093085547e2dbd73acf5732809c0f6827c9c89ee30": ("5.24.0",),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralMLP.forward": {
        "03df2d7685cf8446594448cbd33ef676a2b088779d99d9803abe3bed2ec7ad9b": ("5.24.0",),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralRMSNorm.__init__": {
        "f94137b7bbd7ba5ad1481e6fadf79b43e58a3ea47d2beca6b490f84721720480": ("5.24.0",),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralRMSNorm.forward": {
        "790fa612e4fa57acfcbea31da45f92ba91f9016f7260ef539f61c5530ba06a5f": ("5.24.0",),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralTransformer.forward": {
        "539fd434754f0713ff1b8bd23088643bc6ac03bdd2d75f71231a180e35ee3411": ("5.24.0",),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralVisionModel.__init__": {
        "1ebb59ede05b9f8ca51fa8249809d433a59dc5dc1499c31df34bb19b09bd0f70": ("5.24.0",),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralVisionModel.forward": {
        "52f519f669370edd917ffe25fd0f90e7158264679e65b7e691ea897e122fa862": ("5.24.0",),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralVisionRotaryEmbedding.compute_axial_rope_parameters": {
        "0439f878c86ac53d350bfe215796c0e95e9ee742a893908cff43ffe8b1095a5a": ("5.24.0",),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralVisionRotaryEmbedding.forward": {
        "ea8611d2000fe659053baabf4cbe3f275e1517b7b41d6a80b8b1028e4f306ca8": ("5.24.0",),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralVisionRotaryEmbedding.recomposition_frequencies": {
        "6ff4c7bd25df475da2023c56923fcabd14bcd382d554d0be40b4f49aef36e4f4": ("5.24.0",),
    },
    "transformers.models.pixtral.modeling_pixtral:apply_rotary_pos_emb": {
        "14ef8b572d9c0bd1488bf65dfd1e1d4a70008016d097cf1e6ade055e3d1100ef": ("5.24.0",),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VLMLP.__init__": {
        "3716ecb3ef85e5b8c609ca1cee43f499ca7cea691f2ec392e56c341ace640ea3": ("5.24.0",),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VLMLP.forward": {
        "1e1715d7e10e8420119e35fbb688bc0628aa69de1fcf64661fae20ddd50d5f9f": ("5.24.0",),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VLRMSNorm.__init__": {
        "4c80cccea2db5edba3688db4a5ceadcf4f2c9299a53633ca5105996ea412fe14": ("5.24.0",),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VLRMSNorm.forward": {
        "790fa612e4fa57acfcbea31da45f92ba91f9016f7260ef539f61c5530ba06a5f": ("5.24.0",),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VLVisionAttention.__init__": {
        "38e2eeb4a0c41b15e6de8a20ccc982ffb2b3fe5e570b1a02ef7d4ad71b9a5c92": ("5.24.0",),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VLVisionAttention.forward": {
        "2afc2f9fa3ebd677d971f5123f68b8aee607848de6287e6af72542ff8fb150b2": ("5.24.0",),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VLVisionBlock.forward": {
        "681e62f9206787afc4b0be28c3b8e0e990ed7d987f4b2042614c521d9b90b70d": ("5.24.0",),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VLVisionRotaryEmbedding.compute_axial_rope_parameters": {
        "0bc6e808c65bba8ed533c8a2b5770e471904c4ce91f6423b1bcfb5deea4a0206": ("5.24.0",),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VLVisionRotaryEmbedding.forward": {
        "44492339dc735e098097b1e0f69a245c54cef6fc87a0d6959f9789ab35367059": ("5.24.0",),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VLVisionRotaryEmbedding.recomposition_frequencies": {
        "45be9ff8868e0659f3ae14914e5a1e3648b5ae6f4b4b00bf3f6d30dacb2400a2": ("5.24.0",),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VisionPatchEmbed.__init__": {
        "7d39d6114757c6d331719fcdd6e42056ed012d60ab6920e8f0fcd1b87fbc7092": ("5.24.0",),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VisionPatchEmbed.forward": {
        "8a9155b5aa2fad48521834fb177e946d880c117270e73ba408869bc32f577968": ("5.24.0",),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VisionTransformerPretrainedModel.__init__": {
        "65192ef692e5afb940c74d0b9e368aa079720f8e7053c8f22df99e04b2281294": ("5.24.0",),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VisionTransformerPretrainedModel.forward": {
        "76f11f57da441812e1b5e074735b27acd71803d22c15e4b928d41176d48c00c4": ("5.24.0",),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VisionTransformerPretrainedModel.permute_input_for_window_attn": {
        "00fd04d0ac4e56119ec62aa8b4a53aa753c1b429a0581f6f99e439eb71fdd36e": ("5.24.0",),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:apply_rotary_pos_emb_vision": {
        "961a1862d6808a5ca62c8cd1184d4133feb923b246b8abc79fff6b7fb3079a00": ("5.24.0",),
    },
    "transformers.models.qwen2_vl.modeling_qwen2_vl:PatchEmbed.__init__": {
        "7d39d6114757c6d331719fcdd6e42056ed012d60ab6920e8f0fcd1b87fbc7092": ("5.24.0",),
    },
    "transformers.models.qwen2_vl.modeling_qwen2_vl:PatchEmbed.forward": {
        "8a9155b5aa2fad48521834fb177e946d880c117270e73ba408869bc32f577968": ("5.24.0",),
    },
    "transformers.models.qwen2_vl.modeling_qwen2_vl:Qwen2VLVisionBlock.forward": {
        "c68a8532e7df1519fe71de85be52510889fd25c56688680b185995fe9fa788b3": ("5.24.0",),
    },
    "transformers.models.qwen2_vl.modeling_qwen2_vl:Qwen2VLVisionRotaryEmbedding.compute_axial_rope_parameters": {
        "e17521ebbd668fc93b2e8649515ddffb293a80862bc3d28d21aa9097b4d27692": ("5.24.0",),
    },
    "transformers.models.qwen2_vl.modeling_qwen2_vl:Qwen2VLVisionRotaryEmbedding.forward": {
        "44492339dc735e098097b1e0f69a245c54cef6fc87a0d6959f9789ab35367059": ("5.24.0",),
    },
    "transformers.models.qwen2_vl.modeling_qwen2_vl:Qwen2VLVisionRotaryEmbedding.recomposition_frequencies": {
        "45be9ff8868e0659f3ae14914e5a1e3648b5ae6f4b4b00bf3f6d30dacb2400a2": ("5.24.0",),
    },
    "transformers.models.qwen2_vl.modeling_qwen2_vl:Qwen2VisionTransformerPretrainedModel.__init__": {
        "779db4cdf078339b82e81bd3f9377f255d528dc262d69d7b5ce49a8b9cc04ece": ("5.24.0",),
    },
    "transformers.models.qwen2_vl.modeling_qwen2_vl:Qwen2VisionTransformerPretrainedModel.forward": {
        "4e3008c99d30062bb4883eb7b99fb7e7ba7e94231272741d0db2ce5a35b20c0d": ("5.24.0",),
    },
    "transformers.models.qwen2_vl.modeling_qwen2_vl:VisionAttention.__init__": {
        "34af800ded68139d1982955a51c181b2b4559bf82f394226c6a014412f9e0a95": ("5.24.0",),
    },
    "transformers.models.qwen2_vl.modeling_qwen2_vl:VisionAttention.forward": {
        "2afc2f9fa3ebd677d971f5123f68b8aee607848de6287e6af72542ff8fb150b2": ("5.24.0",),
    },
    "transformers.models.qwen2_vl.modeling_qwen2_vl:apply_rotary_pos_emb_vision": {
        "961a1862d6808a5ca62c8cd1184d4133feb923b246b8abc79fff6b7fb3079a00": ("5.24.0",),
    },
    "transformers.models.qwen3_vl.modeling_qwen3_vl:Qwen3VLVisionAttention.__init__": {
        "f58b5d6b6e6b6b873a916066d466967aec640c91a0a89f12dc834659d45af566": ("5.24.0",),
    },
    "transformers.models.qwen3_vl.modeling_qwen3_vl:Qwen3VLVisionAttention.forward": {
        "2afc2f9fa3ebd677d971f5123f68b8aee607848de6287e6af72542ff8fb150b2": ("5.24.0",),
    },
    "transformers.models.qwen3_vl.modeling_qwen3_vl:Qwen3VLVisionBlock.forward": {
        "681e62f9206787afc4b0be28c3b8e0e990ed7d987f4b2042614c521d9b90b70d": ("5.24.0",),
    },
    "transformers.models.qwen3_vl.modeling_qwen3_vl:Qwen3VLVisionModel.__init__": {
        "7145d3b08399ae1232f4345b08533946ee56b8e6119ba3d3ff625dd1e577f270": ("5.24.0",),
    },
    "transformers.models.qwen3_vl.modeling_qwen3_vl:Qwen3VLVisionModel.forward": {
        "aaadd4d83fb22c27797b995787bcbb2853fba5e4efbea8372749d71d58cc92bf": ("5.24.0",),
    },
    "transformers.models.qwen3_vl.modeling_qwen3_vl:Qwen3VLVisionPatchEmbed.__init__": {
        "dc8972b2342cf3f3ff031dfdc20d5999beb5a1aed2caf736613e71203011d03c": ("5.24.0",),
    },
    "transformers.models.qwen3_vl.modeling_qwen3_vl:Qwen3VLVisionPatchEmbed.forward": {
        "8a9155b5aa2fad48521834fb177e946d880c117270e73ba408869bc32f577968": ("5.24.0",),
    },
    "transformers.models.qwen3_vl.modeling_qwen3_vl:Qwen3VLVisionRotaryEmbedding.compute_axial_rope_parameters": {
        "186098ced4ab0f0a4589ff622a147b1d2050d4060ec4a1698747a2f45ae0e789": ("5.24.0",),
    },
    "transformers.models.qwen3_vl.modeling_qwen3_vl:Qwen3VLVisionRotaryEmbedding.forward": {
        "44492339dc735e098097b1e0f69a245c54cef6fc87a0d6959f9789ab35367059": ("5.24.0",),
    },
    "transformers.models.qwen3_vl.modeling_qwen3_vl:Qwen3VLVisionRotaryEmbedding.recomposition_frequencies": {
        "45be9ff8868e0659f3ae14914e5a1e3648b5ae6f4b4b00bf3f6d30dacb2400a2": ("5.24.0",),
    },
    "transformers.models.qwen3_vl.modeling_qwen3_vl:apply_rotary_pos_emb_vision": {
        "961a1862d6808a5ca62c8cd1184d4133feb923b246b8abc79fff6b7fb3079a00": ("5.24.0",),
    },
    "transformers.models.siglip.modeling_siglip:SiglipAttention.forward": {
        "66b32085cb786718602bd8b3b7c2ab194c40db4d1e8a1e86346d9242f4e5f30b": ("5.24.0",),
    },
    "transformers.models.siglip.modeling_siglip:SiglipEncoder.forward": {
        "d91ba546ba6bcc0710927bffa70189e0c09563e897a682a969b8f8b8456f6963": ("5.24.0",),
    },
    "transformers.models.siglip.modeling_siglip:SiglipEncoderLayer.forward": {
        "e2aec042a10f7e92e7189b11608ee6b2b6186e75b083b31b28bdf0fe7e4fdbbb": ("5.24.0",),
    },
    "transformers.models.siglip.modeling_siglip:SiglipVisionEmbeddings.__init__": {
        "3ac486320dc5e13a6ac6442b478ac4677eb8661da8eba6d73c9a4ed792c87a19": ("5.24.0",),
    },
    "transformers.models.siglip.modeling_siglip:SiglipVisionEmbeddings.forward": {
        "3a7f9d9a1759cd4d2b807af971c9ad368ee66b55431ab0be932ac1dc339626a7": ("5.24.0",),
    },
    "transformers.models.siglip.modeling_siglip:SiglipVisionEmbeddings.interpolate_pos_encoding": {
        "0ea8970982738b7361d0c23dca19b23ba6b08430f9d6b90f2075ad39d91a21dc": ("5.24.0",),
    },
    "transformers.models.siglip.modeling_siglip:SiglipVisionModel.forward": {
        "d423b654a7ec899459eb230086f0d8fc04da6a758bff43db9088838019749fc1": ("5.24.0",),
    },
    "transformers.models.smolvlm.modeling_smolvlm:SmolVLMConnector.forward": {
        "67d6770854cb3449479f3e6e18f093cbb6da6e7f735457f558211878f0f2dc72": ("5.24.0",),
    },
    "transformers.models.smolvlm.modeling_smolvlm:SmolVLMConnector.pixel_shuffle": {
        "59fd364af5e65d6c062e339968dee46e9c9c1812817003b80b475f5cdfdcede8": ("5.24.0",),
    },
    "transformers.vision_utils:get_vision_cu_seqlens": {
        "efc6af7d177a041fe4886f33fbdcc0790c8e4261452db2bc9e939c72ce48ab17": ("5.24.0",),
    },
    "transformers.vision_utils:get_vision_interpolation_indices_and_weights": {
        "f8bf49950ce4280d77ec8cc4ca7e42221ff70e9c5f536f92c7c904062b059a77": ("5.24.0",),
    },
    "transformers.vision_utils:get_vision_position_ids": {
        "8ac4d99395f31a6d890534b9138f69d933ef8526162960ccfda62bc799409db8": ("5.24.0",),
    },
    "transformers.vision_utils:get_vision_window_index": {
        "e63401aa8d17c007dde2d7e9cfe0c9186cbd2445df05436df202281ebfec380e": ("5.24.0",),
    },
}
