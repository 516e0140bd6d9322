"""The transformers code each patch rule was verified on: written by tools/compat_matrix.py from the
parity tests it ran (do not edit).

RANGE: the oldest and newest release of the matrix. RELEASES: per family, the releases on which
all its parity tests passed. FINGERPRINTS: per rule (family/kind), its fingerprints
(vlmops.transformers.patch.fingerprint) on those releases, each with the releases that have it.
SOURCES: per guarded function, the sha256 of its source on those releases, likewise.
"""

RANGE = ("5.10.4", "5.25.0")

RELEASES = {
    "Qwen2-VL": ("5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0"),
    "Qwen2.5-VL": ("5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0"),
    "Qwen3-VL": ("5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0"),
    "InternVL": ("5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0"),
    "Idefics3": ("5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0"),
    "SmolVLM": ("5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0"),
    "Pixtral": ("5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0"),
    "Mllama": ("5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0"),
    "LLaVA": ("5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0"),
    "LLaVA-OneVision": (
        "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
    ),
    "CLIP": ("5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0"),
    "SigLIP": ("5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0"),
}

FINGERPRINTS = {
    "CLIP/attention": {
        "637180ed12ac78e5776eaff30970a03312f57b985ec1f4c7101b5b0bf1b76012": ("5.10.4", "5.13.1", "5.15.1", "5.17.0"),
        "fb887e0999f903f595c75d91a3a73bb0ea800639565608b4ecfa069a6ef665d3": ("5.19.0", "5.20.2", "5.22.2"),
        "a2fb08cb3402dd909c33ed474a2f37387cef8dea9b8952a2958afaf49607a422": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "CLIP/patch_embed": {
        "54568bad325e3aa2f96c25e2addab26d226b079e565bd12f3a908309935fb1b4": ("5.10.4", "5.13.1"),
        "8815ef8947ea1cd4c1ee523f4ea25f7744c3bbfe4a206a1fc0e830efbe4c39e2": (
            "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2",
        ),
        "92cdb7831982a9537b09f1d79e0efac98e8153f27e86f0ef7cbb14862848a5de": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "Idefics3/pixel_shuffle": {
        "0df50a385845487355a853b995623823cf20bdb93ffdec3b3716eb454760720c": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "InternVL/pixel_shuffle": {
        "14327f1525c3b024a64f5de513e818fbaf1316a89bdb4a381e21d34d59e7e51d": ("5.10.4", "5.13.1"),
        "5cf2b67baffc80e4f7eb948fbdd7a4c744ddb233409198008448810276e03cf3": (
            "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2",
        ),
        "4663aa4153b76e6a56993a2d8fa6b1c888a403478d056750fd188d03a63c2bfc": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "LLaVA-OneVision/attention": {
        "03fc4a4b370d57ed7bf39ec6dc2f4d403dd3cec92a65e7527d6a3fbe85c63dd2": ("5.10.4", "5.13.1", "5.15.1", "5.17.0"),
        "e3f93909ce32cfb1f852820c73a78f3f7adb066f0eed5bca01f36d129108437a": ("5.19.0", "5.20.2", "5.22.2"),
        "65f4d21d3e6e9c1faef263378d97cf6be46362dd0a4de0d28918342299ec9723": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "LLaVA-OneVision/patch_embed": {
        "58f15bbfa29ad6b25a24886f10f8b44ab9f2c1cab3f7102cc36848987a1807e1": ("5.10.4", "5.13.1"),
        "1bb1e88e6eea339b3775d7df9f291cb9235e2288180bac73d7be52e9df846e72": ("5.15.1", "5.17.0"),
        "91207c15da41f1fc3e2a8c02f7bf41247f88e1555ec30a9cbe5c4b2db36d1a82": ("5.19.0", "5.20.2", "5.22.2"),
        "91a661578deb1605be099e54264fb4101f4a545358372be7c878e96b5790a819": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "LLaVA/attention": {
        "d4fecec411d8d03ff76bd8b73b0f90557611bfaf685e1942d32cd5403123571a": ("5.10.4", "5.13.1", "5.15.1", "5.17.0"),
        "539ff3d58396ee0d7736f166dae0d3dad22e895e1d0e003e2042ccfa4978450b": ("5.19.0", "5.20.2", "5.22.2"),
        "dad70e742405a336f5a1893ce5a19352d008ea064c9f857856db56ab1d78ee9b": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "LLaVA/patch_embed": {
        "1de8b0521985da29181209a37019d61785d2f4073bf47a7d026d4ae993f07b94": ("5.10.4", "5.13.1"),
        "659440cf5f89fcbd4f05ef723554da03397505d8c11c60163367f112598f6d22": ("5.15.1", "5.17.0"),
        "6eee746ef06ea1df3c2579e467c2a2296d59efb41500b873b9bb3e10829a9e57": ("5.19.0", "5.20.2", "5.22.2"),
        "ddb033175365db671dfdb71a53ab59bc5331b60c4c39682f4d2ceb413303adca": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "Mllama/cross_attention": {
        "2a836413215e4b7e8399aa4246540fa673c397eb2ce4f71489c8e7b3eaa9b30e": ("5.10.4", "5.13.1", "5.15.1", "5.17.0"),
        "eb5c58c5f0426edd2bcb39ec397d53048f0c64f23461eda155d192038b6c0c3f": ("5.19.0", "5.20.2", "5.22.2"),
        "79fc24ebbfd74e8a9d2a6545ca4017252868eed60b0298ace9836bf00d76216c": ("5.23.0",),
        "cc47b9ec36f5ea805f74ebb9045394bbe049d0079ef673a70ed9c7f4a4bf1ff6": ("5.24.0", "5.25.0"),
    },
    "Pixtral/attention": {
        "47811a9eaed7c744dd0ef7593aef17a2ad2a2744ea2335d90e273ad4c217741e": ("5.10.4", "5.13.1", "5.15.1"),
        "4a3efd0c14f34711cb960499e66fc59dc071c87821eb184dc66c11a2ee91ab3c": ("5.17.0",),
        "3039f2a405cfc96fd921834858a61c157cd1d41a9ac46b75e6b585d91a1a8e43": ("5.19.0",),
        "d9959dc60db29d21e7020c3aab33d8dca1e5e6477087d20e5ed3cd2b29524b77": ("5.20.2", "5.22.2"),
        "97ccd5b77ffa64ede7528a056969ee7486886f1c4dbe097f44d25b6b7984f559": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "Pixtral/mlp": {
        "82bd0dd704c7b01f2f3508fa40e85e740d3c6e7bac92e6673cf180a2f77d9b9a": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "Pixtral/norm": {
        "048c8e14bcc9d4d85779c1582cc8094d30374ca8debf34cafc58104b3d40d947": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "Pixtral/patch_embed": {
        "06cc17391bfa0f32a16aeb7a1aeae068d71bc1749a9b2c725ef1d0f9c96404ba": ("5.10.4", "5.13.1", "5.15.1"),
        "9321d5180f800ede6f824e16f7290f4d2073a7e0221ded1a00a018d825b92314": ("5.17.0",),
        "5bb72ddecc023416a235fafd79cd1aec642db7e6c70567de6a543bd0594451f0": ("5.19.0",),
        "9943ac14534b77a1108584ec0a9c347f925d6e435b0a0eb44833c09504a407d9": ("5.20.2", "5.22.2"),
        "84d17eb7ee50a681f0f7519939e35538002e531b339cf676394e2750bf32ea1f": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "Pixtral/rope": {
        "1497d123e06131c6d0ced56d28960ee0f221508376648a86c4043033fd2c854a": ("5.10.4", "5.13.1"),
        "90074d246fd14f8283368d0c22217583d340cb857473bf1cb8d35cac53bdb109": ("5.15.1",),
        "3e9db1d320ee6d4b9f16f3d0bc3ba6574baf6e140d81392436bb58e20e981308": ("5.17.0",),
        "8cbf9b99f0e6de253f364ca6ae8a93100fd1fd8239aef9d87662789bb1efc6d6": ("5.19.0", "5.20.2", "5.22.2", "5.23.0"),
        "f510b08d571dbab0d756617a74cc842240f1b604668b0b0e1539412fe688d2c5": ("5.24.0", "5.25.0"),
    },
    "Qwen2-VL/attention": {
        "9301c7bb8d00cf399fb449999a683cf5953551bb8820419c7d6f3d71519759eb": ("5.10.4",),
        "c508fbe1d0462036dfcda9ae4401057f8f0fda22983a02ba27c7ab8a6ad3fedc": ("5.13.1",),
        "1542b1485946b6a004eed17772b4885cfde866836f8aaec5906a50b6c03c0f32": ("5.15.1",),
        "2468ef1f96275c650906296d95328d83735ad8c88f47f6c31d667a270e505fb3": ("5.17.0", "5.19.0", "5.20.2", "5.22.2"),
        "f2b3fa0e6e039c5453a00c2e83d36f9535a1dcaa7f1bdde597447034ab6311ee": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "Qwen2-VL/patch_embed": {
        "2d4b9f02edeac117e35af79791338387a4383f6fcf48c3cbd3c72bf78bd6b749": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "Qwen2-VL/rope": {
        "241368d8429f1f076f83f424708b3df9a2dbb662ed63a257aa85dd7f6c17f9cd": ("5.10.4", "5.13.1"),
        "0911fe8f63254392af00cb9fe0799d3294295c8d61afcf0e45010c4d4b638496": ("5.15.1",),
        "2c0561106a085b551d3ecb6b946bb93c15eee42555909c45232a5c727b96389f": ("5.17.0",),
        "db3ec16aa5446232d4781b83201cc174f50a57e054e745c721dd84166cfaca1d": ("5.19.0",),
        "ccdd52c62fa0f4a854f258a9e7f7f482bf3594928d8095313444e1ed4c69849b": ("5.20.2", "5.22.2", "5.23.0"),
        "6a5a07d2b5ac6d25ed14f6f70f3fa1a3d4d78c7cf84860fe996392ebb18e3f0e": ("5.24.0", "5.25.0"),
    },
    "Qwen2.5-VL/attention": {
        "2055dd1560f7643824fb23cd9c9c90bde03f0fe9b10427636794875adaeefcf9": ("5.10.4",),
        "6a40f72e75253141a484a33f83a7c07a34cc79c60be8656f4d9200ba60ef18a6": ("5.13.1",),
        "2bf2694340aef2078466de69e47deecb464924fccc6fbad6af8bd33a7f9ed81e": ("5.15.1",),
        "b09aeadb4391c1af2f5837b0024fcdca596bbb143c109551a9af80f3c8f7e34b": ("5.17.0", "5.19.0", "5.20.2", "5.22.2"),
        "848281301499269677fe13be44d09b82ea0aa97c8d71c67f82fe199e1fae87df": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "Qwen2.5-VL/mlp": {
        "b783f619b206fa2dc1883a320116063feb65cc0247e86aaac54ee6750375a340": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "Qwen2.5-VL/norm": {
        "497d28f0a2fd68e2fbf4a60e946c677e79048b15d33d6ebc22d2558627f30377": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "Qwen2.5-VL/patch_embed": {
        "7fded83299d3dfcf631ab69c32cface13ddcef44a70cc0d780a70b23dc6007a4": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "Qwen2.5-VL/rope": {
        "cd485a5df16e3fec3ab411893d6c5e3e92dc04db0d92cfc518e4acf44ffeda4f": ("5.10.4", "5.13.1"),
        "4541346b9543d815bb0e800d2de8acd1d9ad3eda3f4fbf0d81042e9ee6f4b057": ("5.15.1",),
        "81b73539ecc5157c81a47239b193f522628dd42c15f094597fd63592c1afb648": ("5.17.0",),
        "96b5d5191d0e85e286cde228773fcb7d6251326bdcd5f1a06d847a342555ad57": ("5.19.0",),
        "9f7edfa9df6491f75116588859920953f5c2eaf29fc284fe83468440c9d378ae": ("5.20.2", "5.22.2", "5.23.0"),
        "2ed6d761e6233cb53edbb083c1bdbcb6f8798a1ed3dc5b0e4a7d1b895ffd594f": ("5.24.0", "5.25.0"),
    },
    "Qwen3-VL/attention": {
        "d1cd006604830541b38088709f65dc863e18692444847c7e0d2a594f58c36914": ("5.10.4",),
        "e919f87177b1185cb3fa81a9ee8002d3d4c87ef4eb858376f7818a29c03a2c9c": ("5.13.1",),
        "88a2a298f095ee1707d2ace9f964bd2e24a8d62ffdf1b8cbc67b44f512f0f41a": ("5.15.1",),
        "85fdf2619e417ae4508ffe2d2397e2be9ed450f6a0f88c65541403e0fed6c080": ("5.17.0", "5.19.0", "5.20.2", "5.22.2"),
        "d40cfc7dcd730388b39768728aa21c51b69852d5a7c4481753de028b2cc030eb": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "Qwen3-VL/patch_embed": {
        "43aac336bb9f124616a2f852a3b85fd246da1b1e7072601ed1d13a162f420c8e": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "Qwen3-VL/rope": {
        "e19e83e6265968f602980e4d1063fedee5cc7d21518c28c2061134f4e5570789": ("5.10.4", "5.13.1"),
        "20c6103b235d01cd5a2cd2fe501fda378363e20489f1c415f33208559120679c": ("5.15.1",),
        "9b2ac3fd5c43532b92d7f039c670353a063731bd213d5e0c070b0c8381c1cb3d": ("5.17.0",),
        "0988b8e3558ec6142a75871e010350e92e24510dffd4f7e01aaf6c62bc59a356": ("5.19.0",),
        "eeb185284b78fe0544407589749899ca65b3db42724fe6aefb6bea01d9b291d0": ("5.20.2", "5.22.2", "5.23.0"),
        "d4eaf48f549b65e9e215cf4c6ffc38aad09505d2ce94f11e502db6a54059381e": ("5.24.0", "5.25.0"),
    },
    "SigLIP/attention": {
        "4e39a1951b9f032b06fac6b322af64c35737fcc5baece29741fbfd1c1bfa45c0": ("5.10.4", "5.13.1", "5.15.1", "5.17.0"),
        "08e3c24e0c3f2cbb1b9d00d044235420b975673fc65a8a863d8558868c956eed": ("5.19.0", "5.20.2", "5.22.2"),
        "37de9cf0b3ea4af14241690f1990ed11d003accc3f5a6a8ae5bdfef9bbf6ab11": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "SigLIP/patch_embed": {
        "b4644c0e78619de26adcaa580e71bd57b309671ea79f74ff2ec76e5bcf672ac2": ("5.10.4", "5.13.1"),
        "995781905009cabac06c6a895802cd763f075b3823501c58f722a892acca1718": (
            "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2",
        ),
        "8991252541f26c25ae8bd1cc7b7b6cd107dd246a7d7973dd184e5fe052383368": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "SmolVLM/pixel_shuffle": {
        "de29a518afd9610af448c20f690ae4462fc265e8fc975bba72841c9b75bc4db7": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
}

SOURCES = {
    "transformers.models.clip.modeling_clip:CLIPAttention.forward": {
        "45fb45ce967c253b82b398090cb5f2799d3798f620067f2f3b84de00464561a9": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.clip.modeling_clip:CLIPEncoder.forward": {
        "1004cb628fc6685f8316486c8fe5e84692ecf7add0fbbc6f91cb397ab768ca50": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.clip.modeling_clip:CLIPEncoderLayer.forward": {
        "9c77f9ba2eeb416975a9c45877807b584a4b77bdb29b1494a106d92669721791": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2",
        ),
        "75b63a9d281a8af0fcc3efb6b80f0bb0d9be9d3de4b30877f00e2d04c92abb5b": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "transformers.models.clip.modeling_clip:CLIPVisionEmbeddings.__init__": {
        "ea20567223db4dd35ce8cea6779167148440d3acd6a5ba6e24377ac1d9db3fca": ("5.10.4", "5.13.1"),
        "dc7e49cf9c8b06869539cb970190b3208b4eeff4b75ebbcb963abaa685682256": (
            "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.clip.modeling_clip:CLIPVisionEmbeddings.forward": {
        "9869c4cbfefd7017ced4ad98f77b4613df2c57cf024adddbe1e70bcf23422a10": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2",
        ),
        "82de901f98bfe2d2bdb82440a3d4f98185cd8c9e49afd24027eeff2c23958a8e": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "transformers.models.clip.modeling_clip:CLIPVisionEmbeddings.interpolate_pos_encoding": {
        "ab8b567e85f8f7b8d988fc9dc333fb4de120496b861555eb0d57863a5d3d3739": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.clip.modeling_clip:CLIPVisionModel.forward": {
        "1d64c16b25d985c1ba74db998428097a8e128aa94992b74b7421e941e84b0462": ("5.10.4", "5.13.1", "5.15.1", "5.17.0"),
        "e7dfac368716f7a43304c33c8cd8f5c4a8671778fa09670a60eb4a7de1f58566": ("5.19.0", "5.20.2", "5.22.2"),
        "6b056d1060d3ae4c17af01b7fdb078077658b65dc9b3cba75184a81e0bbd2aaf": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "transformers.models.idefics3.modeling_idefics3:Idefics3Connector.forward": {
        "67d6770854cb3449479f3e6e18f093cbb6da6e7f735457f558211878f0f2dc72": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.idefics3.modeling_idefics3:Idefics3Connector.pixel_shuffle": {
        "59fd364af5e65d6c062e339968dee46e9c9c1812817003b80b475f5cdfdcede8": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.internvl.modeling_internvl:InternVLModel.get_image_features": {
        "bbc20389f845c9e7401f25a54677fe95cb420c045af0f819241fdc74527a3372": ("5.10.4", "5.13.1"),
        "37c1125c4810f3b55c5e9aca08fce2d7e08624a8d31a08b39f9b1fbacacfa070": (
            "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2",
        ),
        "7a124db3f9c669f6028c7337e1be16e02329475cba3144416e8c92b15ed0128d": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "transformers.models.internvl.modeling_internvl:InternVLModel.pixel_shuffle": {
        "93d9721ad0c4df9b5ac9525c254f6fbc5ae9e0d2e65a4eac427f79f7009194a9": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.internvl.modeling_internvl:InternVLMultiModalProjector.forward": {
        "ca57ed976a326d5ca7927f4bad8bac7b17465ad1be7c2f176caad5a93a74f6be": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.llava.modeling_llava:LlavaModel.__init__": {
        "cc9af222e9282a4af2b876f0aa655fc7a6addd51d3c483be9127d8099edfb08a": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.llava.modeling_llava:LlavaModel.get_image_features": {
        "e87a7475de8fe96c61c6f13f71d0e11c30891217a6727b047da17e03441b6e73": ("5.10.4", "5.13.1", "5.15.1", "5.17.0"),
        "d4b39a548d05662ce91f4b2aeb96e2aea57b8f7140a9bea0aeb0869c734f1430": ("5.19.0", "5.20.2", "5.22.2"),
        "4f9de0c01a9b60039e655fae33df7ff530301fc8b411b76bdc6892c784d00a25": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "transformers.models.llava_onevision.modeling_llava_onevision:LlavaOnevisionModel.__init__": {
        "43f9e59e1da3aaef624aa21fd9191267d76c43500a9b07c6d8f2c714ed97570f": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2",
        ),
        "4402fe653377309a489a0a3871ee13eab8bad537be08696f1a9986098afee03f": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "transformers.models.llava_onevision.modeling_llava_onevision:LlavaOnevisionModel.get_image_features": {
        "803518f85e080023f16a8aa8baf4da83942fcdafb3ca6686163d954e30adeb3c": ("5.10.4", "5.13.1", "5.15.1", "5.17.0"),
        "686c2136c5925e79d6f929d7b792942f52b20fd38ea5d52def6d07ddf06fe87f": ("5.19.0", "5.20.2", "5.22.2"),
        "e8244aeb1687ecf0f28fd107aaa2898c1238e03ec825a5cb49117c40c770f5cc": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "transformers.models.mllama.modeling_mllama:MllamaCrossAttentionDecoderLayer.forward": {
        "46f41b010a0b700b290363947e58d919249d7fb9c1980bf79121bcac31437635": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0",
        ),
        "6da2fb91af9d4aaa4c8292660169d2d18d595dc817ff784247db076cc0807723": ("5.24.0", "5.25.0"),
    },
    "transformers.models.mllama.modeling_mllama:MllamaModel.forward": {
        "1e3929e5c6b140adda8ebcd797b5ad1e88bc91d90d9bf07b82838fc91c8de75b": ("5.10.4", "5.13.1", "5.15.1", "5.17.0"),
        "8e3adaf509f68567a3ba55fcc5fdde30c0fac530b0346a8b7da8460e19b2dc6e": ("5.19.0", "5.20.2", "5.22.2"),
        "6e4f677cb8385dc70be81f2bb55ae9dcdacde22dc0fda7f273201b949ca19dcd": ("5.23.0",),
        "d28fe843d788870606338fa51f21db941e4d3655a6f548682c9695bd9d5d17cd": ("5.24.0", "5.25.0"),
    },
    "transformers.models.mllama.modeling_mllama:MllamaTextCrossAttention.forward": {
        "2840bb30417789cb0585800930e233ac1f54585735e6bf210bf189a4bc3ec65f": ("5.10.4", "5.13.1", "5.15.1", "5.17.0"),
        "be6da63fae4f4b79fbbb4f064aecdd53875de55589d93cfa3b6064d957a16bae": ("5.19.0", "5.20.2", "5.22.2", "5.23.0"),
        "a088bfefcf156b981599a6ed630c6054066516d7d6a8d8f6a5ff819bfee034d0": ("5.24.0", "5.25.0"),
    },
    "transformers.models.mllama.modeling_mllama:_prepare_cross_attention_mask": {
        "300fa05762c62044bda8ba08278368cad461f8d609917c5608ccfb32e3b37e88": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralAttention.__init__": {
        "49bb19497cc0d00d52f23bc3eee13e6bf8da7055f593c702e0dcaaccf3f96d31": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralAttention.forward": {
        "8eafcfc54e81f11c635a0038f32adf87abcab1cbd3e65df8f2ecc60d93f621c9": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralAttentionLayer.forward": {
        "bf9d0894c40b494269aad65b50193b1029a49449917558fb6474a023fbd6605c": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2",
        ),
        "c5f18fb1773552c7da709e01dd7041f05f8a0747f9cd935c92a36aad2be4efae": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralMLP.__init__": {
        "f8665938acefee57189a70093085547e2dbd73acf5732809c0f6827c9c89ee30": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralMLP.forward": {
        "03df2d7685cf8446594448cbd33ef676a2b088779d99d9803abe3bed2ec7ad9b": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralRMSNorm.__init__": {
        "f94137b7bbd7ba5ad1481e6fadf79b43e58a3ea47d2beca6b490f84721720480": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralRMSNorm.forward": {
        "790fa612e4fa57acfcbea31da45f92ba91f9016f7260ef539f61c5530ba06a5f": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralRotaryEmbedding.__init__": {
        "80c47bae4d848b40835dbcd64560909d36addbec13c5a042ae766e5071211337": ("5.10.4", "5.13.1"),
        "f7fc561077661f5c47c63a7c357944f2ba5b67b3ee6f1957ea30b2d1743c4bbf": ("5.15.1",),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralRotaryEmbedding.compute_default_rope_parameters": {
        "50bcf2b8aa05a22aa4f777ca2f1185baa2b3d37c9f25699675f8c5ffa127f823": ("5.10.4", "5.13.1"),
        "84aa20463545901421396e3b445fecf5a58bb392ef7de67c45be28111b79d697": ("5.15.1",),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralRotaryEmbedding.forward": {
        "f9a8d1813218161534d2dcd9d988998f413a1b240a64d91ec04e9c9de5ec2523": ("5.10.4", "5.13.1", "5.15.1"),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralTransformer.forward": {
        "599d09194bc56b4c6cb9f1b24946b95e0245656b790a45abcb1ef10d00991efb": ("5.10.4", "5.13.1", "5.15.1", "5.17.0"),
        "6a13f346b5c9fe3f40d2332a1c9877b12c682fcfb666bacdd42c8dfae20737e1": ("5.19.0", "5.20.2", "5.22.2"),
        "539fd434754f0713ff1b8bd23088643bc6ac03bdd2d75f71231a180e35ee3411": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralVisionModel.__init__": {
        "459c12b2aff016750d3256f04e4c1c93290baef43f500e031dd1be716a32a9a7": ("5.10.4", "5.13.1", "5.15.1"),
        "a37478a1f2b3ee3782ace4af45137afb10fa17963229268fe03453ced26eb98c": ("5.17.0", "5.19.0", "5.20.2", "5.22.2"),
        "1ebb59ede05b9f8ca51fa8249809d433a59dc5dc1499c31df34bb19b09bd0f70": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralVisionModel.forward": {
        "fb390aa2a0674613c21db5371616a759ffdb16195d527d023e51b89cdf5cd443": ("5.10.4", "5.13.1", "5.15.1"),
        "69f87e03bab63c8c0bbd28ab79395bf238a7b9e02abbfd6602acc983fd0da9ce": ("5.17.0",),
        "c780058eba9a1f74065cd4a366d9b000278d211f26d7135b24daa4143eecb4a7": ("5.19.0",),
        "52f519f669370edd917ffe25fd0f90e7158264679e65b7e691ea897e122fa862": (
            "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralVisionRotaryEmbedding.compute_axial_rope_parameters": {
        "a8dc5571d5bd8c615fa4db70e3bd246aa1f395a869436073a91b483eef2fd316": ("5.17.0",),
        "0439f878c86ac53d350bfe215796c0e95e9ee742a893908cff43ffe8b1095a5a": (
            "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralVisionRotaryEmbedding.forward": {
        "87f3e667f8255628a3e4a734e7ced83c7e593a4fe121932c4e50ddf5f94d3b69": ("5.17.0",),
        "f145d9edeafe72d3e18c909c29ce8260973e6b8201bcb261400e32276611c748": ("5.19.0", "5.20.2", "5.22.2", "5.23.0"),
        "ea8611d2000fe659053baabf4cbe3f275e1517b7b41d6a80b8b1028e4f306ca8": ("5.24.0", "5.25.0"),
    },
    "transformers.models.pixtral.modeling_pixtral:PixtralVisionRotaryEmbedding.recomposition_frequencies": {
        "6ff4c7bd25df475da2023c56923fcabd14bcd382d554d0be40b4f49aef36e4f4": (
            "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.pixtral.modeling_pixtral:apply_rotary_pos_emb": {
        "795d9e03deecd20cacc4264a61c7d583f5a2eb4a2b096e16f8246ec1ce5313ce": ("5.10.4", "5.13.1", "5.15.1"),
        "14ef8b572d9c0bd1488bf65dfd1e1d4a70008016d097cf1e6ade055e3d1100ef": (
            "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.pixtral.modeling_pixtral:position_ids_in_meshgrid": {
        "92ca27808553f2ab99db10047ed374cba8fd578f6ba9d32f89aeb4579520d89a": ("5.10.4", "5.13.1", "5.15.1"),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VLMLP.__init__": {
        "3716ecb3ef85e5b8c609ca1cee43f499ca7cea691f2ec392e56c341ace640ea3": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VLMLP.forward": {
        "1e1715d7e10e8420119e35fbb688bc0628aa69de1fcf64661fae20ddd50d5f9f": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VLRMSNorm.__init__": {
        "4c80cccea2db5edba3688db4a5ceadcf4f2c9299a53633ca5105996ea412fe14": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VLRMSNorm.forward": {
        "790fa612e4fa57acfcbea31da45f92ba91f9016f7260ef539f61c5530ba06a5f": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VLVisionAttention.__init__": {
        "38e2eeb4a0c41b15e6de8a20ccc982ffb2b3fe5e570b1a02ef7d4ad71b9a5c92": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VLVisionAttention.forward": {
        "846f2bb4f04f10e6108d0b36bdc52316fcfaae9fa4624b914b030beb5b793aa8": ("5.10.4", "5.13.1"),
        "2afc2f9fa3ebd677d971f5123f68b8aee607848de6287e6af72542ff8fb150b2": (
            "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VLVisionBlock.forward": {
        "7410906a88cbdb3b4d0426695159c5bdcf5999ff878a68519285a13f7bd2977c": ("5.10.4", "5.13.1"),
        "681e62f9206787afc4b0be28c3b8e0e990ed7d987f4b2042614c521d9b90b70d": (
            "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VLVisionRotaryEmbedding.compute_axial_rope_parameters": {
        "8cee54d5ddfaa51844999e0de780a5fe7d89ab96057b90559fa89634fbcb5355": ("5.17.0",),
        "0bc6e808c65bba8ed533c8a2b5770e471904c4ce91f6423b1bcfb5deea4a0206": (
            "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VLVisionRotaryEmbedding.forward": {
        "7d44e96788c0ec95ee50eb2383d13beeb8bf0937d3c593c1dc15f9032f037163": ("5.17.0",),
        "12bf4e34ad80d6a76259d945706d1c4e1904a064741fe6bb7e9bfe23919ec438": ("5.19.0",),
        "422c2a5dc72284a2e35d96c61a6187aad73057912da01a6033752fc35e1f9b67": ("5.20.2", "5.22.2", "5.23.0"),
        "44492339dc735e098097b1e0f69a245c54cef6fc87a0d6959f9789ab35367059": ("5.24.0", "5.25.0"),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VLVisionRotaryEmbedding.recomposition_frequencies": {
        "45be9ff8868e0659f3ae14914e5a1e3648b5ae6f4b4b00bf3f6d30dacb2400a2": (
            "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VisionPatchEmbed.__init__": {
        "7d39d6114757c6d331719fcdd6e42056ed012d60ab6920e8f0fcd1b87fbc7092": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VisionPatchEmbed.forward": {
        "8a9155b5aa2fad48521834fb177e946d880c117270e73ba408869bc32f577968": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VisionRotaryEmbedding.__init__": {
        "fe30a498453d18242b115cc0dd08f8ffe5d9ee6264f54a49ae6710020e0875d7": ("5.10.4", "5.13.1"),
        "6ffe2269439758b520e4c660566b868a5a20c1e347317e5ed18bfa5030bdf7f9": ("5.15.1",),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VisionRotaryEmbedding.forward": {
        "9de9943bb0b3476b56568b672094b4bd60d7b9d41e6bc3b96da34ec7b4972e93": ("5.10.4", "5.13.1", "5.15.1"),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VisionTransformerPretrainedModel.__init__": {
        "b6007b2d45b471020cb860e38516d939bdc8cadacc63c1e0a807bc68e2a022f2": ("5.10.4", "5.13.1", "5.15.1"),
        "f4bd403ae6d4f0c9855a29ac2ae8900bbb88dad51f11119a9921367468e3152d": ("5.17.0", "5.19.0", "5.20.2", "5.22.2"),
        "65192ef692e5afb940c74d0b9e368aa079720f8e7053c8f22df99e04b2281294": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VisionTransformerPretrainedModel.forward": {
        "ab254af2988fc8e5adbadcd31c79e12d9b179f6e94c3a3875600fde67d07b9b5": ("5.10.4", "5.13.1"),
        "15fb56e4452f70c081f34cce32c9cd54910fc5a79e7220bb75782cb0cf7fd009": ("5.15.1",),
        "76f11f57da441812e1b5e074735b27acd71803d22c15e4b928d41176d48c00c4": (
            "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VisionTransformerPretrainedModel.permute_input_for_window_attn": {
        "00fd04d0ac4e56119ec62aa8b4a53aa753c1b429a0581f6f99e439eb71fdd36e": (
            "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:apply_rotary_pos_emb_vision": {
        "961a1862d6808a5ca62c8cd1184d4133feb923b246b8abc79fff6b7fb3079a00": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen2_vl.modeling_qwen2_vl:PatchEmbed.__init__": {
        "7d39d6114757c6d331719fcdd6e42056ed012d60ab6920e8f0fcd1b87fbc7092": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen2_vl.modeling_qwen2_vl:PatchEmbed.forward": {
        "8a9155b5aa2fad48521834fb177e946d880c117270e73ba408869bc32f577968": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen2_vl.modeling_qwen2_vl:Qwen2VLVisionBlock.forward": {
        "8e120700018939d7197c700d89d65fee4571ae6d4f1f1d988b78040fd7df4c94": ("5.10.4", "5.13.1"),
        "c68a8532e7df1519fe71de85be52510889fd25c56688680b185995fe9fa788b3": (
            "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen2_vl.modeling_qwen2_vl:Qwen2VLVisionRotaryEmbedding.compute_axial_rope_parameters": {
        "42af6e1f82070b6c162ca99eb035df61cc0b041c25d9324e4d6aade3df8f18fb": ("5.17.0",),
        "e17521ebbd668fc93b2e8649515ddffb293a80862bc3d28d21aa9097b4d27692": (
            "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen2_vl.modeling_qwen2_vl:Qwen2VLVisionRotaryEmbedding.forward": {
        "7d44e96788c0ec95ee50eb2383d13beeb8bf0937d3c593c1dc15f9032f037163": ("5.17.0",),
        "12bf4e34ad80d6a76259d945706d1c4e1904a064741fe6bb7e9bfe23919ec438": ("5.19.0",),
        "422c2a5dc72284a2e35d96c61a6187aad73057912da01a6033752fc35e1f9b67": ("5.20.2", "5.22.2", "5.23.0"),
        "44492339dc735e098097b1e0f69a245c54cef6fc87a0d6959f9789ab35367059": ("5.24.0", "5.25.0"),
    },
    "transformers.models.qwen2_vl.modeling_qwen2_vl:Qwen2VLVisionRotaryEmbedding.recomposition_frequencies": {
        "45be9ff8868e0659f3ae14914e5a1e3648b5ae6f4b4b00bf3f6d30dacb2400a2": (
            "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen2_vl.modeling_qwen2_vl:Qwen2VisionTransformerPretrainedModel.__init__": {
        "40b44a944ded8c55646cc12b4d21f08f0d64b443a3f98bce267098e30e8d6e0e": ("5.10.4", "5.13.1", "5.15.1"),
        "32f18616dcf5599129cdf0a14fc09ee508afbf975a75806c2c211d581ff9fb41": ("5.17.0", "5.19.0", "5.20.2", "5.22.2"),
        "779db4cdf078339b82e81bd3f9377f255d528dc262d69d7b5ce49a8b9cc04ece": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "transformers.models.qwen2_vl.modeling_qwen2_vl:Qwen2VisionTransformerPretrainedModel.forward": {
        "1a3cb61c5af970d3bff6b18f366baf1017fba2914e4499dfa493f6458120e1f4": ("5.10.4", "5.13.1"),
        "8cab89cd6940a98d4efc6d0e600b03b7ae4a3da569c63b8d40eadc64fcdec949": ("5.15.1",),
        "4e3008c99d30062bb4883eb7b99fb7e7ba7e94231272741d0db2ce5a35b20c0d": (
            "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen2_vl.modeling_qwen2_vl:VisionAttention.__init__": {
        "34af800ded68139d1982955a51c181b2b4559bf82f394226c6a014412f9e0a95": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen2_vl.modeling_qwen2_vl:VisionAttention.forward": {
        "846f2bb4f04f10e6108d0b36bdc52316fcfaae9fa4624b914b030beb5b793aa8": ("5.10.4", "5.13.1"),
        "2afc2f9fa3ebd677d971f5123f68b8aee607848de6287e6af72542ff8fb150b2": (
            "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen2_vl.modeling_qwen2_vl:VisionRotaryEmbedding.__init__": {
        "fe30a498453d18242b115cc0dd08f8ffe5d9ee6264f54a49ae6710020e0875d7": ("5.10.4", "5.13.1"),
        "6ffe2269439758b520e4c660566b868a5a20c1e347317e5ed18bfa5030bdf7f9": ("5.15.1",),
    },
    "transformers.models.qwen2_vl.modeling_qwen2_vl:VisionRotaryEmbedding.forward": {
        "9de9943bb0b3476b56568b672094b4bd60d7b9d41e6bc3b96da34ec7b4972e93": ("5.10.4", "5.13.1", "5.15.1"),
    },
    "transformers.models.qwen2_vl.modeling_qwen2_vl:apply_rotary_pos_emb_vision": {
        "961a1862d6808a5ca62c8cd1184d4133feb923b246b8abc79fff6b7fb3079a00": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen3_vl.modeling_qwen3_vl:Qwen3VLVisionAttention.__init__": {
        "f58b5d6b6e6b6b873a916066d466967aec640c91a0a89f12dc834659d45af566": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen3_vl.modeling_qwen3_vl:Qwen3VLVisionAttention.forward": {
        "846f2bb4f04f10e6108d0b36bdc52316fcfaae9fa4624b914b030beb5b793aa8": ("5.10.4", "5.13.1"),
        "2afc2f9fa3ebd677d971f5123f68b8aee607848de6287e6af72542ff8fb150b2": (
            "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen3_vl.modeling_qwen3_vl:Qwen3VLVisionBlock.forward": {
        "7410906a88cbdb3b4d0426695159c5bdcf5999ff878a68519285a13f7bd2977c": ("5.10.4", "5.13.1"),
        "681e62f9206787afc4b0be28c3b8e0e990ed7d987f4b2042614c521d9b90b70d": (
            "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen3_vl.modeling_qwen3_vl:Qwen3VLVisionModel.__init__": {
        "6e0cc0ea2d0928c25ac3238bec5113ccfa57935b0b2eafec62abe2d0e39a5607": ("5.10.4", "5.13.1"),
        "50046a617756193c567e30e780f0807f6b1836207ffa1bf44d4d00ca17bd9652": ("5.15.1",),
        "6775b9d832a4d35ec9bbcb07100fb9cfa9f32da018c10b4676f4c39b41bad6c4": ("5.17.0", "5.19.0", "5.20.2", "5.22.2"),
        "7145d3b08399ae1232f4345b08533946ee56b8e6119ba3d3ff625dd1e577f270": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "transformers.models.qwen3_vl.modeling_qwen3_vl:Qwen3VLVisionModel.forward": {
        "01917e7b438133f3cc766da96cdfc49fede383b4a41746be3094c42a4420555f": ("5.10.4", "5.13.1"),
        "f5e837325020f1c573e03dca6627e3607cdd3f5ed4a8fb894794b9841dd1aaf1": ("5.15.1",),
        "aaadd4d83fb22c27797b995787bcbb2853fba5e4efbea8372749d71d58cc92bf": (
            "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen3_vl.modeling_qwen3_vl:Qwen3VLVisionPatchEmbed.__init__": {
        "dc8972b2342cf3f3ff031dfdc20d5999beb5a1aed2caf736613e71203011d03c": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen3_vl.modeling_qwen3_vl:Qwen3VLVisionPatchEmbed.forward": {
        "8a9155b5aa2fad48521834fb177e946d880c117270e73ba408869bc32f577968": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen3_vl.modeling_qwen3_vl:Qwen3VLVisionRotaryEmbedding.__init__": {
        "fe30a498453d18242b115cc0dd08f8ffe5d9ee6264f54a49ae6710020e0875d7": ("5.10.4", "5.13.1"),
        "6ffe2269439758b520e4c660566b868a5a20c1e347317e5ed18bfa5030bdf7f9": ("5.15.1",),
    },
    "transformers.models.qwen3_vl.modeling_qwen3_vl:Qwen3VLVisionRotaryEmbedding.compute_axial_rope_parameters": {
        "9e39bcb940c7a12d450e17b0dc6f0cbdcd94197ad64269a154369f88676ceb3e": ("5.17.0",),
        "186098ced4ab0f0a4589ff622a147b1d2050d4060ec4a1698747a2f45ae0e789": (
            "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen3_vl.modeling_qwen3_vl:Qwen3VLVisionRotaryEmbedding.forward": {
        "9de9943bb0b3476b56568b672094b4bd60d7b9d41e6bc3b96da34ec7b4972e93": ("5.10.4", "5.13.1", "5.15.1"),
        "7d44e96788c0ec95ee50eb2383d13beeb8bf0937d3c593c1dc15f9032f037163": ("5.17.0",),
        "12bf4e34ad80d6a76259d945706d1c4e1904a064741fe6bb7e9bfe23919ec438": ("5.19.0",),
        "422c2a5dc72284a2e35d96c61a6187aad73057912da01a6033752fc35e1f9b67": ("5.20.2", "5.22.2", "5.23.0"),
        "44492339dc735e098097b1e0f69a245c54cef6fc87a0d6959f9789ab35367059": ("5.24.0", "5.25.0"),
    },
    "transformers.models.qwen3_vl.modeling_qwen3_vl:Qwen3VLVisionRotaryEmbedding.recomposition_frequencies": {
        "45be9ff8868e0659f3ae14914e5a1e3648b5ae6f4b4b00bf3f6d30dacb2400a2": (
            "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.qwen3_vl.modeling_qwen3_vl:apply_rotary_pos_emb_vision": {
        "961a1862d6808a5ca62c8cd1184d4133feb923b246b8abc79fff6b7fb3079a00": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.siglip.modeling_siglip:SiglipAttention.forward": {
        "66b32085cb786718602bd8b3b7c2ab194c40db4d1e8a1e86346d9242f4e5f30b": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.siglip.modeling_siglip:SiglipEncoder.forward": {
        "d91ba546ba6bcc0710927bffa70189e0c09563e897a682a969b8f8b8456f6963": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.siglip.modeling_siglip:SiglipEncoderLayer.forward": {
        "22f28409c86c589b9fc38cf4cbb1c7c8258fcb39fb197de104bce2fd6c04a42d": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2",
        ),
        "e2aec042a10f7e92e7189b11608ee6b2b6186e75b083b31b28bdf0fe7e4fdbbb": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "transformers.models.siglip.modeling_siglip:SiglipVisionEmbeddings.__init__": {
        "da54170708ec5adc3a07088a946408a6a16aaff9c0e2f4c74dbaa405fd653ffb": ("5.10.4", "5.13.1"),
        "3ac486320dc5e13a6ac6442b478ac4677eb8661da8eba6d73c9a4ed792c87a19": (
            "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.siglip.modeling_siglip:SiglipVisionEmbeddings.forward": {
        "a8c16fd5620c8ddcde5db8664dce1974425401f9b26615fbc2ee14a29b7ab4be": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2",
        ),
        "3a7f9d9a1759cd4d2b807af971c9ad368ee66b55431ab0be932ac1dc339626a7": ("5.23.0", "5.24.0", "5.25.0"),
    },
    "transformers.models.siglip.modeling_siglip:SiglipVisionEmbeddings.interpolate_pos_encoding": {
        "0ea8970982738b7361d0c23dca19b23ba6b08430f9d6b90f2075ad39d91a21dc": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.siglip.modeling_siglip:SiglipVisionModel.forward": {
        "5baf4a6afefdb15bc46551f8b8a910ec4a6494b85597a06328e251365acbf373": ("5.10.4", "5.13.1", "5.15.1", "5.17.0"),
        "d423b654a7ec899459eb230086f0d8fc04da6a758bff43db9088838019749fc1": (
            "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.smolvlm.modeling_smolvlm:SmolVLMConnector.forward": {
        "67d6770854cb3449479f3e6e18f093cbb6da6e7f735457f558211878f0f2dc72": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.models.smolvlm.modeling_smolvlm:SmolVLMConnector.pixel_shuffle": {
        "59fd364af5e65d6c062e339968dee46e9c9c1812817003b80b475f5cdfdcede8": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.vision_utils:get_vision_bilinear_indices_and_weights": {
        "4e6f170a28c89638f7e7bf5bac3c4da0de3ed65da03feccd7c4d2e19befb1668": ("5.10.4", "5.13.1"),
        "4e1207aa130d828b946a870091f32bb84ec64768017233176c2669426b3c7bb8": ("5.15.1",),
    },
    "transformers.vision_utils:get_vision_cu_seqlens": {
        "6071e04f0f0915f483db8b3c1254a100f183e69b282836494088a7896b894257": ("5.10.4", "5.13.1"),
        "efc6af7d177a041fe4886f33fbdcc0790c8e4261452db2bc9e939c72ce48ab17": (
            "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.vision_utils:get_vision_interpolation_indices_and_weights": {
        "f8bf49950ce4280d77ec8cc4ca7e42221ff70e9c5f536f92c7c904062b059a77": (
            "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.vision_utils:get_vision_position_ids": {
        "8e09e70f4d83ac1b67feac76c6379c60cff56f20f09dc6a3a26f085424fdb676": ("5.10.4",),
        "8ac4d99395f31a6d890534b9138f69d933ef8526162960ccfda62bc799409db8": (
            "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
    "transformers.vision_utils:get_vision_window_index": {
        "e63401aa8d17c007dde2d7e9cfe0c9186cbd2445df05436df202281ebfec380e": (
            "5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0",
        ),
    },
}
